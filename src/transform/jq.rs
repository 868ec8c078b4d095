//! jq programs of `transform.body.jq`, through the `jaq` interpreter.
//!
//! The program comes from the routes file and is trusted; the body it runs on is not. So a
//! program is accepted only when its cost is bounded by the size of the message: `validate`
//! refuses what could loop or grow on a value taken from the message (`def`, `reduce`,
//! `foreach`, `range`, `repeat`, `recurse(f)`, `while`, `until`, `combinations`, a `*`
//! without a literal number or object on one side, since `"s" * n` repeats a string `n`
//! times), what is quadratic on two inputs (`contains`, `inside`, `indices`, `index`,
//! `rindex`, `transpose`, a regular expression that is not a literal), and what reaches
//! outside the message (`$ENV`, `env`, `input`, `debug`, `stderr`, `halt`). Only the
//! builtins listed in [`ALLOWED`] may be called. At run time the body is parsed with the
//! same depth limit as every other JSON reading, the program must produce exactly one
//! value, and that value is written only up to the route's largest message.

use std::io::Write;

use jaq_core::load::parse::{BinaryOp, Pattern, Term};
use jaq_core::load::{Arena, File, Lexer, Loader, Parser};
use jaq_core::ops::Math;
use jaq_core::path::Part;
use jaq_core::{Compiler, Ctx, Vars, data, unwrap_valr};
use jaq_json::Val;

type Data = data::JustLut<Val>;

/// The builtins a program may call, by name and number of arguments.
pub const ALLOWED: &[(&str, usize)] = &[
    ("empty", 0),
    ("error", 0),
    ("error", 1),
    ("null", 0),
    ("true", 0),
    ("false", 0),
    ("not", 0),
    ("select", 1),
    ("type", 0),
    ("length", 0),
    ("utf8bytelength", 0),
    ("keys", 0),
    ("keys_unsorted", 0),
    ("has", 1),
    ("in", 1),
    ("values", 0),
    ("nulls", 0),
    ("booleans", 0),
    ("numbers", 0),
    ("strings", 0),
    ("arrays", 0),
    ("objects", 0),
    ("iterables", 0),
    ("scalars", 0),
    ("map", 1),
    ("map_values", 1),
    ("to_entries", 0),
    ("from_entries", 0),
    ("with_entries", 1),
    ("add", 0),
    ("add", 1),
    ("any", 0),
    ("any", 1),
    ("all", 0),
    ("all", 1),
    ("isempty", 1),
    ("first", 0),
    ("first", 1),
    ("last", 0),
    ("last", 1),
    ("nth", 1),
    ("limit", 2),
    ("reverse", 0),
    ("sort", 0),
    ("sort_by", 1),
    ("group_by", 1),
    ("unique", 0),
    ("unique_by", 1),
    ("min", 0),
    ("max", 0),
    ("min_by", 1),
    ("max_by", 1),
    ("flatten", 0),
    ("flatten", 1),
    ("del", 1),
    ("delpaths", 1),
    ("getpath", 1),
    ("setpath", 2),
    ("paths", 0),
    ("paths", 1),
    ("path", 1),
    ("pick", 1),
    ("recurse", 0),
    ("walk", 1),
    ("join", 1),
    ("split", 1),
    ("split", 2),
    ("splits", 1),
    ("splits", 2),
    ("test", 1),
    ("test", 2),
    ("match", 1),
    ("match", 2),
    ("capture", 1),
    ("capture", 2),
    ("scan", 1),
    ("scan", 2),
    ("sub", 2),
    ("sub", 3),
    ("gsub", 2),
    ("gsub", 3),
    ("ascii_downcase", 0),
    ("ascii_upcase", 0),
    ("startswith", 1),
    ("endswith", 1),
    ("ltrimstr", 1),
    ("rtrimstr", 1),
    ("trim", 0),
    ("ltrim", 0),
    ("rtrim", 0),
    ("explode", 0),
    ("implode", 0),
    ("tostring", 0),
    ("tonumber", 0),
    ("tojson", 0),
    ("floor", 0),
    ("ceil", 0),
    ("round", 0),
    ("abs", 0),
    ("isnan", 0),
    ("isinfinite", 0),
    ("isnormal", 0),
    ("now", 0),
];

/// Builtins whose first argument is a regular expression, which must be a literal so that
/// the message cannot choose one.
const REGEX_FIRST: &[&str] = &["test", "match", "capture", "scan", "sub", "gsub", "splits"];

/// A compiled jq program.
#[derive(Clone)]
pub struct JqProgram {
    source: std::sync::Arc<str>,
    filter: std::sync::Arc<jaq_core::Filter<Data>>,
}

impl std::fmt::Debug for JqProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JqProgram({:?})", self.source)
    }
}

impl JqProgram {
    /// Parses, checks and compiles `source`; the error says what is wrong or refused.
    pub fn compile(source: &str) -> Result<JqProgram, String> {
        let tokens = Lexer::new(source).lex().map_err(|errors| {
            let (expected, found) = &errors[0];
            format!(
                "jq: expected {} near `{}`",
                expected.as_str(),
                excerpt(found)
            )
        })?;
        let term = Parser::new(&tokens).parse(|p| p.term()).map_err(|errors| {
            let (expected, found) = &errors[0];
            let found = found.map_or("the end".to_owned(), |t| format!("`{}`", excerpt(t.0)));
            format!("jq: expected {} but found {found}", expected.as_str())
        })?;
        let mut refused = Vec::new();
        audit(&term, &mut refused);
        if let Some(first) = refused.first() {
            return Err(format!(
                "jq: {first} is not allowed: its cost could grow with the message or it reads outside it (docs/configuration.md#body)"
            ));
        }
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs());
        let funs = jaq_core::funs()
            .chain(jaq_std::funs())
            .chain(jaq_json::funs());
        let arena = Arena::default();
        let modules = Loader::new(defs)
            .load(
                &arena,
                File {
                    code: source,
                    path: (),
                },
            )
            .map_err(|_| "jq: the program cannot be parsed".to_owned())?;
        let filter = Compiler::default()
            .with_funs(funs)
            .compile(modules)
            .map_err(|errors| {
                let names: Vec<String> = errors
                    .iter()
                    .flat_map(|(_, errors)| errors.iter())
                    .map(|(name, undefined)| format!("`{name}` ({undefined:?})"))
                    .collect();
                format!("jq: undefined {}", names.join(", "))
            })?;
        Ok(JqProgram {
            source: source.into(),
            filter: std::sync::Arc::new(filter),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Runs the program on `body` (JSON) and returns its one result as JSON, at most
    /// `max_bytes` long.
    pub fn run(&self, body: &[u8], max_bytes: usize) -> Result<Vec<u8>, String> {
        let input: Val = serde_json::from_slice(body)
            .map_err(|e| format!("the body is not JSON ({e}) but the transform runs jq on it"))?;
        let ctx = Ctx::<Data>::new(&self.filter.lut, Vars::new([]));
        let mut outputs = self.filter.id.run((ctx, input)).map(unwrap_valr);
        let value = match outputs.next() {
            None => return Err("jq produced no value".to_owned()),
            Some(Err(error)) => return Err(format!("jq: {}", excerpt(&error.to_string()))),
            Some(Ok(value)) => value,
        };
        if outputs.next().is_some() {
            return Err("jq produced more than one value (collect them with `[...]`)".to_owned());
        }
        let mut out = Bounded {
            bytes: Vec::new(),
            max: max_bytes,
        };
        jaq_json::write::write(&mut out, &jaq_json::write::Pp::default(), 0, &value).map_err(
            |_| format!("jq's result is larger than the largest message ({max_bytes} bytes)"),
        )?;
        Ok(out.bytes)
    }
}

/// The first characters of `text`, for an error message.
fn excerpt(text: &str) -> String {
    let mut out: String = text.chars().take(60).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

/// A writer that refuses to grow past `max` bytes.
struct Bounded {
    bytes: Vec<u8>,
    max: usize,
}

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.max {
            return Err(std::io::Error::other("too large"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn is_literal_factor(term: &Term<&str>) -> bool {
    match term {
        Term::Num(_) | Term::Obj(_) => true,
        Term::Neg(inner) => matches!(**inner, Term::Num(_)),
        _ => false,
    }
}

fn is_literal_string(term: &Term<&str>) -> bool {
    match term {
        Term::Str(None, parts) => parts
            .iter()
            .all(|p| !matches!(p, jaq_core::load::lex::StrPart::Term(_))),
        _ => false,
    }
}

fn audit_pattern(pattern: &Pattern<&str>, refused: &mut Vec<String>) {
    match pattern {
        Pattern::Var(_) => {}
        Pattern::Arr(items) => items.iter().for_each(|p| audit_pattern(p, refused)),
        Pattern::Obj(entries) => entries.iter().for_each(|(key, p)| {
            audit(key, refused);
            audit_pattern(p, refused);
        }),
    }
}

/// Collects what `term` uses that is refused (see the module's documentation).
fn audit(term: &Term<&str>, refused: &mut Vec<String>) {
    match term {
        Term::Id | Term::Recurse | Term::Num(_) | Term::Break(_) => {}
        Term::Var(name) => {
            if *name == "$ENV" || (name.starts_with("$__") && *name != "$__loc__") {
                refused.push(format!("`{name}`"));
            }
        }
        Term::Str(_, parts) => {
            for part in parts {
                if let jaq_core::load::lex::StrPart::Term(inner) = part {
                    audit(inner, refused);
                }
            }
        }
        Term::Arr(inner) => {
            if let Some(inner) = inner {
                audit(inner, refused);
            }
        }
        Term::Obj(entries) => {
            for (key, value) in entries {
                audit(key, refused);
                if let Some(value) = value {
                    audit(value, refused);
                }
            }
        }
        Term::Neg(inner) | Term::Label(_, inner) => audit(inner, refused),
        Term::BinOp(left, op, right) => {
            match op {
                BinaryOp::Math(Math::Mul) | BinaryOp::UpdateMath(Math::Mul)
                    if !is_literal_factor(left) && !is_literal_factor(right) =>
                {
                    refused.push("`*` without a literal number or object on one side".into());
                }
                BinaryOp::Pipe(Some(pattern)) => audit_pattern(pattern, refused),
                _ => {}
            }
            audit(left, refused);
            audit(right, refused);
        }
        Term::Fold(kind, ..) => refused.push(format!("`{kind}`")),
        Term::Def(..) => refused.push("`def`".into()),
        Term::TryCatch(body, catch) => {
            audit(body, refused);
            if let Some(catch) = catch {
                audit(catch, refused);
            }
        }
        Term::IfThenElse(branches, otherwise) => {
            for (condition, then) in branches {
                audit(condition, refused);
                audit(then, refused);
            }
            if let Some(otherwise) = otherwise {
                audit(otherwise, refused);
            }
        }
        Term::Call(name, args) => {
            if !ALLOWED.contains(&(*name, args.len())) {
                refused.push(format!("`{name}/{}`", args.len()));
            } else if (REGEX_FIRST.contains(name) || (*name == "split" && args.len() == 2))
                && !args.first().is_some_and(is_literal_string)
            {
                refused.push(format!(
                    "`{name}` with a regular expression that is not a literal string"
                ));
            }
            args.iter().for_each(|arg| audit(arg, refused));
        }
        Term::Path(head, path) => {
            audit(head, refused);
            for (part, _) in &path.0 {
                match part {
                    Part::Index(index) => audit(index, refused),
                    Part::Range(from, to) => {
                        for bound in [from, to].into_iter().flatten() {
                            audit(bound, refused);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(program: &str, body: &str) -> Result<String, String> {
        let program = JqProgram::compile(program)?;
        program
            .run(body.as_bytes(), 1_000_000)
            .map(|out| String::from_utf8(out).unwrap())
    }

    #[test]
    fn projects_the_body() {
        assert_eq!(
            run(
                "{id: .order.id, total: (.items | map(.price) | add)}",
                r#"{"order": {"id": "o-1"}, "items": [{"price": 2}, {"price": 3}]}"#
            )
            .unwrap(),
            r#"{"id":"o-1","total":5}"#
        );
        assert_eq!(
            run(".name | ascii_upcase", r#"{"name": "ab"}"#).unwrap(),
            r#""AB""#
        );
        assert_eq!(run(".price * 100", r#"{"price": 2}"#).unwrap(), "200");
        assert_eq!(
            run(r#"select(.a | test("^x"))"#, r#"{"a": "xy"}"#).unwrap(),
            r#"{"a":"xy"}"#
        );
    }

    #[test]
    fn refuses_what_could_grow_with_the_message_or_read_outside_it() {
        for program in [
            "[range(.n)]",
            "def f: f; f",
            "reduce .[] as $x (.; . + .)",
            "foreach .[] as $x (0; . + 1)",
            "[repeat(.)]",
            "recurse(.a)",
            ".s * .n",
            "$ENV",
            "env",
            "input",
            "debug",
            "combinations",
            ".a | contains(.b)",
            ".a | test(.pattern)",
            "[limit(3; repeat(1))]",
            "until(. > 100; . * 2)",
        ] {
            let error = JqProgram::compile(program).unwrap_err();
            assert!(error.contains("not allowed"), "{program}: {error}");
        }
    }

    #[test]
    fn syntax_and_unknown_names_are_errors_at_compile_time() {
        assert!(JqProgram::compile(".a |").unwrap_err().starts_with("jq:"));
        assert!(JqProgram::compile("{a: }").unwrap_err().starts_with("jq:"));
        assert!(JqProgram::compile("$undefined").is_err());
    }

    #[test]
    fn a_hostile_body_fails_cleanly() {
        let project = JqProgram::compile("{a: .a}").unwrap();
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        assert!(project.run(deep.as_bytes(), 1_000_000).is_err());
        assert!(
            project
                .run(b"not json", 1_000)
                .unwrap_err()
                .contains("not JSON")
        );
        let copy = JqProgram::compile(".").unwrap();
        let big = format!(r#"{{"a": "{}"}}"#, "x".repeat(2_000));
        assert!(
            copy.run(big.as_bytes(), 1_000)
                .unwrap_err()
                .contains("larger than")
        );
        // Ten repetitions of a literal factor stay linear in the message.
        let ten = JqProgram::compile(".s * 10").unwrap();
        assert_eq!(
            ten.run(br#"{"s": "ab"}"#, 1_000).unwrap(),
            format!("\"{}\"", "ab".repeat(10)).into_bytes()
        );
    }

    #[test]
    fn exactly_one_result() {
        assert!(run(".[]", "[1, 2]").unwrap_err().contains("more than one"));
        assert!(run("empty", "1").unwrap_err().contains("no value"));
        assert!(run(".a.b", r#"{"a": 5}"#).unwrap_err().starts_with("jq:"));
    }
}

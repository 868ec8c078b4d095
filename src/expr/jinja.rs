//! The filters and tests a Jinja template names: `{{ x | upper }}`, `{% if x is odd %}`,
//! `{% filter trim %}`.
//!
//! minijinja looks filters and tests up only while rendering, and exposes its parser only
//! behind the `unstable_machinery` feature, which has no semver guarantees. A template that
//! gets here has already parsed, so a scan of its tags is enough: outside string literals,
//! comments and `{% raw %}` blocks, a filter is the (dotted) name after `|` or after the
//! `filter` of a `{% filter %}` block, and a test the name after `is` or `is not`. Names
//! given as text to `select`, `reject`, `map` and the like are not found.

use std::collections::BTreeSet;

/// minijinja's built-in filters (with the `builtins` and `json` features), to suggest the one
/// a typo meant. Only a suggestion: whether a filter exists is asked of the environment.
pub const BUILTIN_FILTERS: &[&str] = &[
    "abs",
    "attr",
    "batch",
    "bool",
    "capitalize",
    "chain",
    "count",
    "d",
    "default",
    "dictsort",
    "e",
    "escape",
    "first",
    "float",
    "format",
    "groupby",
    "indent",
    "int",
    "items",
    "join",
    "last",
    "length",
    "lines",
    "list",
    "lower",
    "map",
    "max",
    "min",
    "pprint",
    "reject",
    "rejectattr",
    "replace",
    "reverse",
    "round",
    "safe",
    "select",
    "selectattr",
    "slice",
    "sort",
    "split",
    "string",
    "sum",
    "title",
    "tojson",
    "trim",
    "unique",
    "upper",
    "urlencode",
    "zip",
];

/// minijinja's built-in tests, for the same suggestions as [`BUILTIN_FILTERS`].
pub const BUILTIN_TESTS: &[&str] = &[
    "boolean",
    "defined",
    "divisibleby",
    "endingwith",
    "eq",
    "equalto",
    "escaped",
    "even",
    "false",
    "filter",
    "float",
    "ge",
    "greaterthan",
    "gt",
    "in",
    "integer",
    "iterable",
    "le",
    "lessthan",
    "lower",
    "lt",
    "mapping",
    "ne",
    "none",
    "number",
    "odd",
    "safe",
    "sameas",
    "sequence",
    "startingwith",
    "string",
    "test",
    "true",
    "undefined",
    "upper",
];

/// The filter and test names a template uses, sorted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Names {
    pub filters: BTreeSet<String>,
    pub tests: BTreeSet<String>,
}

/// A piece of the inside of a tag. Literals and symbols other than `|` and `.` only matter
/// as what separates names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    Name(&'a str),
    Symbol(char),
    Literal,
}

/// Finds the filters and tests `source` names; `source` is a template that parses.
pub fn names(source: &str) -> Names {
    let mut found = Names::default();
    let mut rest = source;
    while let Some(at) = rest.find('{') {
        let text = &rest[at..];
        rest = if let Some(comment) = text.strip_prefix("{#") {
            comment.find("#}").map_or("", |end| &comment[end + 2..])
        } else if let Some(expression) = text.strip_prefix("{{") {
            let (tokens, after) = tokenize(expression, "}}");
            found.collect(&tokens);
            after
        } else if let Some(statement) = text.strip_prefix("{%") {
            let (tokens, after) = tokenize(statement, "%}");
            found.statement(&tokens, after)
        } else {
            &text[1..]
        };
    }
    found
}

impl Names {
    /// Takes the names of a `{% ... %}` tag and returns where scanning goes on: after the
    /// tag, or after the `{% endraw %}` of a raw block, whose text is not Jinja.
    fn statement<'a>(&mut self, tokens: &[Token<'_>], after: &'a str) -> &'a str {
        let body = without_whitespace_control(tokens);
        match body {
            [Token::Name("raw"), ..] => return after_raw(after),
            [Token::Name("filter"), rest @ ..] => self.filters.extend(dotted_name(rest)),
            _ => {}
        }
        self.collect(body);
        after
    }

    /// Takes the filters (after `|`) and tests (after `is` or `is not`) among `tokens`.
    fn collect(&mut self, tokens: &[Token<'_>]) {
        for (at, token) in tokens.iter().enumerate() {
            let rest = &tokens[at + 1..];
            match token {
                Token::Symbol('|') => self.filters.extend(dotted_name(rest)),
                // `x.is` is an attribute, not the test operator.
                Token::Name("is") if at == 0 || tokens[at - 1] != Token::Symbol('.') => {
                    let rest = match rest {
                        [Token::Name("not"), tail @ ..] => tail,
                        _ => rest,
                    };
                    self.tests.extend(dotted_name(rest));
                }
                _ => {}
            }
        }
    }
}

/// The tokens of a tag without the leading `-` or `+` of `{%-` and `{%+`.
fn without_whitespace_control<'t, 'a>(tokens: &'t [Token<'a>]) -> &'t [Token<'a>] {
    match tokens {
        [Token::Symbol('-' | '+'), rest @ ..] => rest,
        _ => tokens,
    }
}

/// The name `tokens` start with, dotted parts joined (`foo.bar`), as minijinja reads filter
/// and test names.
fn dotted_name(tokens: &[Token<'_>]) -> Option<String> {
    let [Token::Name(first), tail @ ..] = tokens else {
        return None;
    };
    let mut name = (*first).to_owned();
    let mut rest = tail;
    while let [Token::Symbol('.'), Token::Name(part), tail @ ..] = rest {
        name.push('.');
        name.push_str(part);
        rest = tail;
    }
    Some(name)
}

/// The text after the `{% endraw %}` that closes a raw block (nothing when none does).
fn after_raw(text: &str) -> &str {
    let mut rest = text;
    while let Some(at) = rest.find("{%") {
        rest = &rest[at + 2..];
        let tag = rest.trim_start_matches(['-', '+']).trim_start();
        if let Some(after) = tag.strip_prefix("endraw")
            && let Some(after) = after
                .trim_start()
                .trim_start_matches('-')
                .strip_prefix("%}")
        {
            return after;
        }
    }
    ""
}

/// Splits the inside of a tag into tokens, up to its `close` (`}}` or `%}`) outside any
/// brackets, so that `{{ {'a': {'b': 1}} }}` ends at the last `}}`. Returns the tokens and
/// the text after the tag.
fn tokenize<'a>(text: &'a str, close: &str) -> (Vec<Token<'a>>, &'a str) {
    let mut tokens = Vec::new();
    let mut depth = 0usize;
    let mut chars = text.char_indices().peekable();
    while let Some(&(at, c)) = chars.peek() {
        if depth == 0 && text[at..].starts_with(close) {
            return (tokens, &text[at + close.len()..]);
        }
        chars.next();
        if c.is_whitespace() {
            continue;
        }
        if c == '"' || c == '\'' {
            skip_string(&mut chars, c);
            tokens.push(Token::Literal);
        } else if c.is_alphanumeric() || c == '_' {
            let mut end = at + c.len_utf8();
            while let Some((next_at, next)) =
                chars.next_if(|&(_, next)| next.is_alphanumeric() || next == '_')
            {
                end = next_at + next.len_utf8();
            }
            tokens.push(if c.is_ascii_digit() {
                Token::Literal
            } else {
                Token::Name(&text[at..end])
            });
        } else {
            match c {
                '(' | '[' | '{' => depth += 1,
                ')' | ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
            tokens.push(Token::Symbol(c));
        }
    }
    (tokens, "")
}

/// Moves `chars` past the end of a string literal opened by `quote`, escapes included.
fn skip_string(chars: &mut impl Iterator<Item = (usize, char)>, quote: char) {
    let mut escaped = false;
    for (_, c) in chars {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == quote {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(source: &str) -> Vec<String> {
        names(source).filters.into_iter().collect()
    }

    fn tests(source: &str) -> Vec<String> {
        names(source).tests.into_iter().collect()
    }

    #[test]
    fn finds_filters_after_pipes_with_or_without_arguments() {
        assert_eq!(
            filters("{{ body | default('x') | upper }}-{{ key|trim }}"),
            ["default", "trim", "upper"]
        );
        assert_eq!(
            filters("{% for x in body.items | sort %}{{ x }}{% endfor %}"),
            ["sort"]
        );
        assert_eq!(filters("{{ x | ns.custom }}"), ["ns.custom"]);
    }

    #[test]
    fn finds_tests_after_is_and_is_not() {
        assert_eq!(
            tests("{% if key is defined and body is not none %}{{ key }}{% endif %}"),
            ["defined", "none"]
        );
        assert_eq!(
            tests("{{ 'a' if x is divisibleby 3 else 'b' }}"),
            ["divisibleby"]
        );
    }

    #[test]
    fn finds_the_filter_of_a_filter_block() {
        let found = names("{%- filter upper|trim -%}{{ key }}{% endfilter %}");
        assert_eq!(
            found.filters.into_iter().collect::<Vec<_>>(),
            ["trim", "upper"]
        );
    }

    #[test]
    fn ignores_strings_comments_raw_blocks_and_attributes() {
        let found = names(concat!(
            "{{ 'a | b is c' ~ \"d\\\" | e\" }}",
            "{# {{ x | hidden }} #}",
            "{% raw %}{{ x | raw_text }}{% endraw %}",
            "{{ headers.is }}",
            "{{ {'a': {'b': 1}} | tojson }}",
        ));
        assert_eq!(found.filters.into_iter().collect::<Vec<_>>(), ["tojson"]);
        assert!(found.tests.is_empty());
    }

    #[test]
    fn text_outside_tags_is_not_read() {
        assert_eq!(names("a | b is c { d }"), Names::default());
    }
}

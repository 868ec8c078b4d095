//! Bounded property-based fuzzing of every decoding path the library exposes to text or
//! bytes from a user or a broker: routes files (YAML, `${...}` interpolation, durations,
//! numbers, endpoint addresses, CEL conditions, Jinja templates, nesting and aliases, values
//! from the environment that errors must not quote), the limits on a message,
//! `reply.allow` patterns, the JSON line form of a
//! message, correlation tokens and the request-reply relay, endpoint addresses, `HOST:PORT`
//! listen addresses, `--url` connection URLs and the endpoint paths and options their
//! adapters check, URL redaction, binary-header name lists, hop counts and trace ids, and
//! the command line.
//!
//! # What it guarantees
//!
//! No property stops at "it did not panic". Each also checks the answer: a round trip where
//! the format has an inverse (the JSON form, tokens, the relay, addresses, interpolation,
//! header-name lists); a refusal with a reason where the input is garbage (every error of
//! a refused routes file has a message and a line inside the file, and the report shows
//! it; a token that the signer did not make with its key is refused); or the invariants of
//! an accepted result (a plan that validated keeps every documented lower bound, and an
//! accepted reply timeout can be relayed).
//!
//! # Bounds
//!
//! Every property runs a fixed number of cases, sized by cost so that the whole file runs
//! in seconds in a debug build; `PROPTEST_CASES=N` runs N cases of every property instead
//! (e.g. `PROPTEST_CASES=20000 cargo nextest run --test fuzz` for a soak). Inputs are
//! short (tens of tokens), and the code that compiles routes files, conditions and
//! templates runs on a thread with a large stack: a debug build's frames are several times
//! those of the release build that runs on the `bridge` main thread's 8 MiB.
//!
//! # Regressions
//!
//! A failing case is shrunk and its seed appended to `tests/proptest-regressions/fuzz.txt`,
//! which every later run replays before new cases. Commit that file with the fix, so that
//! the case stays covered. `PROPTEST_DISABLE_FAILURE_PERSISTENCE=1` turns this off.
//!
//! # Not reachable from here
//!
//! The broker mappings are private modules and keep their own unit tests, with bounded
//! property tests of the same kind in a `mod fuzz` of each (sized the same way, by
//! `PROPTEST_CASES` too, but never persisted: a failure there is pinned as a `#[test]`):
//! SQS/SNS message attributes and SNS notification unwrapping (`adapter::aws::mapping`,
//! `adapter::aws::source`), Kafka headers (`adapter::kafka::mapping`), AMQP properties and
//! tables (`adapter::rabbitmq::mapping`), Pub/Sub attributes (`adapter::pubsub::mapping`).
//! The retry schedule built from `retry:` (`router::retry`) and the `NAME=VALUE` header
//! arguments of `bridge send` and `bridge request` (`cli`) keep unit tests only.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bridge::adapter::{Role, SourceOptions, connection_from_url, redact_url};
use bridge::address::{Endpoint, is_connection_name};
use bridge::cli::{Cli, Command};
use bridge::config::{self, ConfigErrors, Plan, check_listen};
use bridge::expr::{Condition, Template};
use bridge::message::limits::Limits;
use bridge::message::{HeaderValue, Headers, Message, Origin, OriginValue, json, reserved};
use bridge::relay::{Claims, ReplyAllow, ReplyRelay, RequestRelay, Signer, TokenError, Unmatched};
use bytes::Bytes;
use clap::Parser as _;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{FileFailurePersistence, TestCaseError, TestCaseResult};

// ---------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------

/// Pieces of routes files, YAML syntax and interpolation that a token soup is made of.
const YAML_TOKENS: &[&str] = &[
    "connections:",
    "routes:",
    "settings:",
    "  - name: x",
    "from:",
    "to:",
    "when:",
    "key:",
    "dead_letter:",
    "retry:",
    "reply:",
    "timeout:",
    "options:",
    "endpoint:",
    "type: memory",
    "type: stdio",
    "type: kafka",
    "mem:q",
    "io:stdin",
    "io:stdout",
    "${",
    "}",
    "${X}",
    "${X:-d}",
    "${file:/nonexistent/bridge-fuzz}",
    "$$",
    "{{ key }}",
    ":",
    "-",
    "\n",
    "\r\n",
    "\r",
    "  ",
    "\t",
    "'",
    "\"",
    "&a",
    "*a",
    "!!binary",
    "!!str",
    "<<:",
    "[",
    "]",
    "{",
    ",",
    "#",
    "?",
    "|",
    ">",
    "---",
    "...",
    "%YAML 1.2",
    "~",
    "10s",
    "0",
    "-1",
    "1e400",
    ".nan",
];

/// Any text at all, or a soup of routes-file tokens that gets further into the parser.
fn routes_file_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        6 => prop::sample::select(YAML_TOKENS).prop_map(str::to_owned),
        1 => "[a-z0-9_]{1,6}",
        1 => any::<char>().prop_map(String::from),
    ];
    prop_oneof![
        any::<String>(),
        prop::collection::vec(piece, 0..48).prop_map(|pieces| pieces.concat()),
    ]
}

/// The value every variable of the environment has, or `None` for an empty environment.
fn variable_value() -> impl Strategy<Value = Option<String>> {
    prop::option::of(".{0,12}")
}

/// The valid example file, loaded unchanged by `tests/config.rs`.
const EXAMPLE: &str = include_str!("../routes.example.yaml");

/// One change to a routes file: the mistakes an edit in a hurry makes.
#[derive(Debug, Clone)]
enum Edit {
    DeleteLine(Index),
    DuplicateLine(Index),
    SwapLines(Index, Index),
    InsertToken(Index, &'static str),
    TruncateAt(Index),
}

impl Edit {
    fn apply(&self, text: &str) -> String {
        let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
        match self {
            Edit::DeleteLine(at) if !lines.is_empty() => {
                lines.remove(at.index(lines.len()));
            }
            Edit::DuplicateLine(at) if !lines.is_empty() => {
                let at = at.index(lines.len());
                lines.insert(at, lines[at]);
            }
            Edit::SwapLines(a, b) if !lines.is_empty() => {
                let (a, b) = (a.index(lines.len()), b.index(lines.len()));
                lines.swap(a, b);
            }
            Edit::InsertToken(at, token) => {
                let mut text = text.to_owned();
                text.insert_str(char_boundary(&text, at), token);
                return text;
            }
            Edit::TruncateAt(at) => return text[..char_boundary(text, at)].to_owned(),
            _ => {}
        }
        lines.concat()
    }
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<Index>().prop_map(Edit::DeleteLine),
        any::<Index>().prop_map(Edit::DuplicateLine),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
        (any::<Index>(), prop::sample::select(YAML_TOKENS))
            .prop_map(|(at, token)| Edit::InsertToken(at, token)),
        any::<Index>().prop_map(Edit::TruncateAt),
    ]
}

/// A byte offset of `text` on a char boundary (the end included), picked by `at`.
fn char_boundary(text: &str, at: &Index) -> usize {
    let boundaries: Vec<usize> = text
        .char_indices()
        .map(|(offset, _)| offset)
        .chain([text.len()])
        .collect();
    boundaries[at.index(boundaries.len())]
}

/// Units `humantime` knows, and a few it does not.
const DURATION_UNITS: &[&str] = &[
    "ns", "us", "ms", "s", "m", "h", "d", "w", "M", "y", "", "x", " s",
];

/// Durations as written in a routes file: usual ones, ones too long for any clock, junk.
fn duration_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (0u64..2000, prop::sample::select(DURATION_UNITS))
            .prop_map(|(n, unit)| format!("{n}{unit}")),
        1 => (any::<u64>(), prop::sample::select(DURATION_UNITS))
            .prop_map(|(n, unit)| format!("{n}{unit}")),
        1 => Just("1h 30m".to_owned()),
        1 => ".{0,10}",
    ]
}

/// YAML scalars that are no plain number: special floats, numbers written as text, other
/// kinds of value.
const ODD_NUMBERS: &[&str] = &[
    ".nan", ".inf", "-.inf", "\"10\"", "'1.5'", "~", "[]", "{}", "true",
];

/// A YAML scalar written as is where a number is expected: numbers, numbers written as
/// text (as a `${VAR}` gives them), floats no integer holds, and things that are no number.
fn yaml_number() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0u64..20).prop_map(|n| n.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_map(|x| format!("{x:?}")),
        1 => prop::sample::select(ODD_NUMBERS).prop_map(str::to_owned),
    ]
}

/// Endpoint addresses on the structured file's connections (`mem`, `io`), some templated,
/// some with interpolation, some broken.
fn endpoint_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "mem:[a-z-]{1,8}",
        1 => "io:(stdin|stdout|stderr|stdio)",
        1 => "mem:[a-z]{0,3}\\{\\{ ?(headers\\.region|key|body\\.a|nope) ?\\}\\}[a-z/]{0,3}",
        1 => "mem:\\$\\{[A-Z]{0,2}(:-q)?\\}?",
        1 => "(mem|io|kafka|x y)?:?.{0,10}",
    ]
}

/// Conditions people write, and some they do not.
const CONDITIONS: &[&str] = &[
    "headers.type == \"order\"",
    "has(headers.region)",
    "body.total >= 1000",
    "body_text.contains(\"x\")",
    "key == \"k\"",
    "size(body_text) > 2",
    "origin.partition == 0",
    "headers.exists(h, h == \"type\")",
    "content_type == null",
    "body.a.b.c > 1.5",
    "true",
    "1",
    "nope == 1",
    "headers.",
];

/// CEL tokens, joined with spaces into expressions of at most a dozen tokens: brackets nest
/// only a few levels deep, far below what a person writes.
const CEL_TOKENS: &[&str] = &[
    "headers",
    "key",
    "body",
    "body_text",
    "origin",
    "correlation_id",
    "reply_to",
    "message_id",
    "content_type",
    "h",
    ".",
    "type",
    "total",
    "==",
    "!=",
    "<",
    ">=",
    "&&",
    "||",
    "!",
    "-",
    "+",
    "*",
    "/",
    "%",
    "?",
    ":",
    "in",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    "has(",
    "size(",
    "int(",
    "string(",
    "bytes(",
    ".exists(h,",
    ".all(h,",
    ".map(h,",
    "\"a\"",
    "'b'",
    "b\"\\xff\"",
    "r\"raw\"",
    "\"\"\"",
    "0",
    "1",
    "-1",
    "1.5",
    "1e308",
    "1e400",
    "18446744073709551615u",
    "9223372036854775807",
    "-9223372036854775808",
    "true",
    "null",
    "\\",
    "\"",
    "'",
    "é",
];

fn condition_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(CONDITIONS).prop_map(str::to_owned),
        prop::collection::vec(prop::sample::select(CEL_TOKENS), 0..12)
            .prop_map(|tokens| tokens.join(" ")),
        ".{0,24}",
    ]
}

/// Templates people write, and some they do not.
const TEMPLATES: &[&str] = &[
    "orders-{{ headers.region }}",
    "{{ body.customer }}",
    "{{ key }}",
    "{% if key %}a{% else %}b{% endif %}",
    "{{ body_text | upper }}",
    "{% for name in headers %}{{ name }}{% endfor %}",
    "{{ origin.partition }}",
    "{{ headers['a b'] }}",
    "{{ nope }}",
    "{{",
    "plain",
    "",
];

/// Jinja tokens. Nothing that multiplies or repeats (`*`, `range`): a template comes from
/// the routes file's author, and a template that renders a gigabyte is not a finding.
const JINJA_TOKENS: &[&str] = &[
    "{{",
    "}}",
    "{%",
    "%}",
    "{#",
    "#}",
    "if",
    "else",
    "endif",
    "for",
    "in",
    "endfor",
    "set",
    "x",
    "=",
    "headers",
    "key",
    "body",
    "body_text",
    "origin",
    "correlation_id",
    ".",
    "region",
    "[",
    "]",
    "(",
    ")",
    "|",
    "upper",
    "default",
    "length",
    "tojson",
    "trim",
    "~",
    "+",
    "-",
    "/",
    "//",
    "0",
    "1",
    "99999999999999999999999",
    "'a'",
    "\"b\"",
    "none",
    "true",
    "loop",
    "raw",
    "endraw",
    "is",
    "defined",
    "not",
    " ",
    "é",
];

fn template_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(TEMPLATES).prop_map(str::to_owned),
        prop::collection::vec(prop::sample::select(JINJA_TOKENS), 0..12)
            .prop_map(|tokens| tokens.concat()),
        ".{0,24}",
    ]
}

/// Bytes that are text half of the time: the JSON form and the expressions treat UTF-8
/// and other bytes differently.
fn some_bytes(max: usize) -> impl Strategy<Value = Bytes> {
    prop_oneof![
        ".{0,24}".prop_map(Bytes::from),
        prop::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from),
    ]
}

/// JSON bodies the conditions and templates above read, and bodies that are not JSON.
const JSON_BODIES: &[&str] = &[
    r#"{"total": 1500, "customer": "c-1", "a": {"b": {"c": 2}}}"#,
    r#"{"total": "many", "a": null}"#,
    "[]",
    "null",
    "1e400",
    "{",
];

fn message_body() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        prop::sample::select(JSON_BODIES).prop_map(|body| Bytes::from_static(body.as_bytes())),
        some_bytes(64),
    ]
}

/// Header names: ones the code reads, duplicates, and anything.
const HEADER_NAMES: &[&str] = &[
    "type",
    "region",
    "status",
    "traceparent",
    "bridge-hops",
    "bridge-key",
    "a b",
    "",
];

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(HEADER_NAMES).prop_map(str::to_owned),
        ".{0,12}",
    ]
}

fn header_value() -> impl Strategy<Value = HeaderValue> {
    let text = prop_oneof![
        ".{0,16}",
        "00-[0-9a-f]{32}-[0-9a-f]{16}-01",
        " ?[0-9]{1,11} ?",
    ];
    prop_oneof![
        text.prop_map(HeaderValue::Text),
        prop::collection::vec(any::<u8>(), 0..16).prop_map(HeaderValue::from),
    ]
}

fn headers() -> impl Strategy<Value = Headers> {
    prop::collection::vec((header_name(), header_value()), 0..6)
        .prop_map(|pairs| pairs.into_iter().collect::<Headers>())
}

/// 9999-12-31T23:59:59.999Z, the last instant that RFC 3339 (four-digit years) can write.
const LAST_RFC3339_MILLIS: u64 = 253_402_300_799_999;

/// Times the JSON form can write, to the millisecond it keeps.
fn rfc3339_time() -> impl Strategy<Value = SystemTime> {
    (0..=LAST_RFC3339_MILLIS).prop_map(|millis| UNIX_EPOCH + Duration::from_millis(millis))
}

/// Any time a broker can hand over: an AMQP timestamp is any u64 of seconds, an SQS
/// `bridge-timestamp-ms` any u64 of milliseconds, a Kafka timestamp may be before 1970.
fn any_time() -> impl Strategy<Value = SystemTime> {
    prop_oneof![
        rfc3339_time(),
        any::<u64>().prop_map(|millis| UNIX_EPOCH + Duration::from_millis(millis)),
        (1..=u64::from(u32::MAX) * 1000)
            .prop_map(|millis| UNIX_EPOCH - Duration::from_millis(millis)),
    ]
}

fn origin() -> impl Strategy<Value = Origin> {
    (
        ".{0,12}",
        any::<Option<i32>>(),
        any::<Option<i64>>(),
        any::<Option<u32>>(),
        prop::option::of(".{0,12}"),
        prop::option::of(".{0,12}"),
    )
        .prop_map(
            |(endpoint, partition, offset, receive_count, broker_message_id, routing_key)| Origin {
                endpoint,
                partition,
                offset,
                receive_count,
                broker_message_id,
                fields: routing_key
                    .map(|key| ("routing_key", OriginValue::text(&key)))
                    .into_iter()
                    .collect(),
            },
        )
}

/// Messages with every envelope field set or not, timestamps drawn from `timestamps`.
fn message_with(
    timestamps: impl Strategy<Value = Option<SystemTime>>,
) -> impl Strategy<Value = Message> {
    (
        message_body(),
        headers(),
        prop::option::of(some_bytes(16)),
        prop::option::of(".{0,16}"),
        prop::option::of(".{0,16}"),
        prop::option::of(".{0,16}"),
        prop::option::of(".{0,16}"),
        timestamps,
        prop::option::of(origin()),
    )
        .prop_map(
            |(
                body,
                headers,
                key,
                correlation_id,
                reply_to,
                message_id,
                content_type,
                timestamp,
                origin,
            )| {
                let mut message = Message::new(body);
                message.headers = headers;
                message.key = key;
                message.correlation_id = correlation_id;
                message.reply_to = reply_to;
                message.message_id = message_id;
                message.content_type = content_type;
                message.timestamp = timestamp;
                match origin {
                    Some(origin) => message.with_origin(origin),
                    None => message,
                }
            },
        )
}

/// Messages whose every field the JSON form can write.
fn any_message() -> impl Strategy<Value = Message> {
    message_with(prop::option::of(rfc3339_time()))
}

/// Pieces of JSON message lines: the form's own field names, values of each kind, and
/// timestamps at and beyond the edges of what RFC 3339 allows.
const JSON_TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"body\"",
    "\"body_base64\"",
    "\"key\"",
    "\"key_base64\"",
    "\"headers\"",
    "\"name\"",
    "\"text\"",
    "\"base64\"",
    "\"correlation_id\"",
    "\"reply_to\"",
    "\"message_id\"",
    "\"content_type\"",
    "\"timestamp\"",
    "\"origin\"",
    "\"endpoint\"",
    "\"partition\"",
    "\"x\"",
    "\"\"",
    "\"AA==\"",
    "\"/w\"",
    "\"2024-02-29T12:00:00.123Z\"",
    "\"2024-02-29 12:00:00\"",
    "\"2016-12-31T23:59:60Z\"",
    "\"0000-01-01T00:00:00Z\"",
    "\"9999-12-31T23:59:59.999999999Z\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "null",
    "true",
    "0",
    "-1",
    "1e400",
    " ",
];

/// A line the encoder wrote, then damaged at one place.
fn damaged_json_line() -> impl Strategy<Value = String> {
    (
        any_message(),
        any::<Index>(),
        prop::sample::select(JSON_TOKENS),
        0..3u8,
    )
        .prop_map(|(message, at, token, damage)| {
            let mut line = json::encode(&message);
            let at = char_boundary(&line, &at);
            match damage {
                0 => line.truncate(at),
                1 => line.insert_str(at, token),
                _ if at < line.len() => {
                    line.remove(at);
                }
                _ => {}
            }
            line
        })
}

fn json_line_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        prop::collection::vec(prop::sample::select(JSON_TOKENS), 0..24)
            .prop_map(|tokens| tokens.concat()),
        damaged_json_line(),
    ]
}

/// Signing keys of any length, the empty one included.
fn signing_key() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..80)
}

/// Claims with any addresses and any deadline from 1970 on (to the millisecond a token
/// keeps).
fn claims() -> impl Strategy<Value = Claims> {
    (any::<String>(), any::<Option<String>>(), any::<u64>()).prop_map(
        |(reply_to, correlation_id, millis)| Claims {
            reply_to,
            correlation_id,
            deadline: UNIX_EPOCH + Duration::from_millis(millis),
        },
    )
}

/// Correlation ids a replier may send back: anything, and things shaped like tokens.
fn token_like_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "b1\\.[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,30}",
        "b1\\.[A-Za-z0-9_.=+/-]{0,60}",
    ]
}

/// Endpoint addresses, well formed or not.
fn address_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[A-Za-z0-9_ -]{0,6}:?.{0,12}",
        ":.{0,6}",
        "[a-z]{1,6}:",
    ]
}

fn socket_address() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::from((Ipv4Addr::from(ip), port))),
        (any::<[u16; 8]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::from((Ipv6Addr::from(ip), port))),
    ]
}

/// `settings.http.listen` values: valid ones, host names, junk.
fn listen_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("off".to_owned()),
        socket_address().prop_map(|address| address.to_string()),
        "[a-z0-9.\\[\\]:]{0,12}:[0-9]{0,6}",
        ".{0,12}",
    ]
}

/// `--url` values for every adapter, well formed or nearly.
fn connection_url() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "(kafka|amqp|amqps|aws|pubsub|memory|stdio|http)(:|://)?[a-zA-Z0-9@:/?&=%._~-]{0,30}",
        "amqps?://([a-z]{1,6}(:[A-Za-z0-9%]{0,6})?@)?[a-z0-9.-]{0,10}(:[0-9]{0,6})?(/[a-z%0-9]{0,5})?(\\?[a-z_]{1,10}=[a-z0-9]{0,5})?",
        "aws://[a-z0-9-]{0,12}/?(\\?[a-z_]{0,12}=[a-z:/0-9.]{0,12}(&[a-z_]{0,8}=?[a-z]{0,4})?)?",
        "pubsub://[a-z0-9-]{0,12}/?(\\?[a-z]{0,9}=[a-z:/0-9.]{0,12})?",
        "kafka://[a-z0-9.:,/]{0,20}",
    ]
}

/// Endpoint paths in each adapter's terms, and junk.
fn endpoint_path() -> impl Strategy<Value = String> {
    prop_oneof![
        "(queue|exchange|topic|subscription|sqs|sns|stdin|stdout|stderr)(/[a-z0-9.*#_-]{0,12}){0,3}",
        "[a-z-]{1,10}(/[0-9]{1,3})?",
        "sqs/https?://[a-z0-9./-]{0,20}",
        "sns/arn:aws:sns:[a-z0-9-]{0,9}:[0-9]{0,12}:[a-z.-]{0,8}",
        ".{0,16}",
    ]
}

/// Source option names the adapters know, and others.
const OPTION_NAMES: &[&str] = &[
    "format",
    "queue",
    "wait_seconds",
    "group_id",
    "start",
    "commit_interval_ms",
    "lease_seconds",
    "prefetch",
    "broker_dead_letter",
];

/// Option values the adapters know (stdin formats, Kafka start positions), and others.
const OPTION_STRINGS: &[&str] = &["json", "lines", "earliest", "latest", "q", ""];

/// `from.options` values: mostly absent, else small JSON trees using the known names.
fn options_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        4 => Just(serde_json::Value::Null),
        1 => any::<bool>().prop_map(serde_json::Value::from),
        1 => any::<i64>().prop_map(serde_json::Value::from),
        1 => prop::sample::select(OPTION_STRINGS).prop_map(serde_json::Value::from),
        1 => "[a-z_]{0,12}".prop_map(serde_json::Value::from),
    ];
    let name = prop_oneof![
        prop::sample::select(OPTION_NAMES).prop_map(str::to_owned),
        "[a-z_]{1,8}",
    ];
    leaf.prop_recursive(3, 16, 4, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(name.clone(), inner, 0..4)
                .prop_map(|fields| serde_json::Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// Command-line words `bridge` knows, in any order, with some it does not.
const CLI_WORDS: &[&str] = &[
    "run",
    "validate",
    "send",
    "tail",
    "request",
    "routes.yaml",
    "kafka:orders",
    "-",
    "--",
    "--url",
    "amqp://guest:guest@127.0.0.1:5672/%2f",
    "--header",
    "-H",
    "a=b",
    "=",
    "--count",
    "0",
    "18446744073709551616",
    "--timeout",
    "30s",
    "99999999999999999999y",
    "--json",
    "--reply-from",
    "--reply-to",
    "--http-listen",
    "off",
    "--log-format",
    "json",
    "text",
    "--log-level",
    "debug",
    "-c",
    "--key",
    "--file",
    "--from-beginning",
    "--disturb",
    "--help",
    "--version",
    "-x",
];

fn command_line() -> impl Strategy<Value = Vec<String>> {
    let word = prop_oneof![
        3 => prop::sample::select(CLI_WORDS).prop_map(str::to_owned),
        1 => ".{0,12}",
    ];
    prop::collection::vec(word, 0..8)
}

/// The fields of a routes file that the structured fuzzer fills; the rest is valid. Text
/// values are quoted (any text can be written), numbers are written as they come.
#[derive(Debug, Clone)]
struct SettingsFields {
    drain_timeout: String,
    max_hops: String,
    listen: String,
    backlog_interval: String,
}

#[derive(Debug, Clone)]
struct SinkFields {
    endpoint: String,
    key: Option<String>,
    when: Option<String>,
    optional: bool,
}

#[derive(Debug, Clone)]
struct RetryFields {
    max_attempts: String,
    initial_backoff: String,
    max_backoff: String,
    multiplier: String,
    max_elapsed: String,
}

#[derive(Debug, Clone)]
struct RouteFields {
    name: String,
    from: String,
    sinks: Vec<SinkFields>,
    when: Option<String>,
    dead_letter: Option<String>,
    retry: RetryFields,
    ordering: String,
    max_in_flight: String,
}

fn settings_fields() -> impl Strategy<Value = SettingsFields> {
    (
        duration_text(),
        yaml_number(),
        listen_text(),
        duration_text(),
    )
        .prop_map(
            |(drain_timeout, max_hops, listen, backlog_interval)| SettingsFields {
                drain_timeout,
                max_hops,
                listen,
                backlog_interval,
            },
        )
}

fn sink_fields() -> impl Strategy<Value = SinkFields> {
    (
        endpoint_text(),
        prop::option::of(template_text()),
        prop::option::of(condition_text()),
        any::<bool>(),
    )
        .prop_map(|(endpoint, key, when, optional)| SinkFields {
            endpoint,
            key,
            when,
            optional,
        })
}

fn retry_fields() -> impl Strategy<Value = RetryFields> {
    (
        yaml_number(),
        duration_text(),
        duration_text(),
        yaml_number(),
        duration_text(),
    )
        .prop_map(
            |(max_attempts, initial_backoff, max_backoff, multiplier, max_elapsed)| RetryFields {
                max_attempts,
                initial_backoff,
                max_backoff,
                multiplier,
                max_elapsed,
            },
        )
}

fn route_fields() -> impl Strategy<Value = RouteFields> {
    (
        // A fixed name now and then, so that two routes share it.
        prop_oneof![
            Just("orders".to_owned()),
            "[a-z-]{1,8}",
            Just(" ".to_owned()),
            ".{0,8}"
        ],
        endpoint_text(),
        prop::collection::vec(sink_fields(), 0..3),
        prop::option::of(condition_text()),
        prop::option::of(endpoint_text()),
        retry_fields(),
        prop_oneof![Just("none".to_owned()), Just("key".to_owned()), ".{0,6}"],
        yaml_number(),
    )
        .prop_map(
            |(name, from, sinks, when, dead_letter, retry, ordering, max_in_flight)| RouteFields {
                name,
                from,
                sinks,
                when,
                dead_letter,
                retry,
                ordering,
                max_in_flight,
            },
        )
}

// ---------------------------------------------------------------------------------------
// Running and checking
// ---------------------------------------------------------------------------------------

/// Where failing cases are kept, to be committed with the fix. Proptest's default looks for
/// a `lib.rs` above the test file to put them beside, which `tests/` has not.
const REGRESSIONS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/proptest-regressions/fuzz.txt"
);

/// `cases` cases, or `PROPTEST_CASES` when set (`ProptestConfig::with_cases` alone would
/// ignore it in some proptest versions); failures persisted in [`REGRESSIONS`]; shrinking
/// bounded in time so that even a failing run ends.
fn fuzz_config(cases: u32) -> ProptestConfig {
    let defaults = ProptestConfig::default();
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cases);
    // The default is `None` only when PROPTEST_DISABLE_FAILURE_PERSISTENCE is set.
    let persist = defaults.failure_persistence.is_some();
    ProptestConfig {
        cases,
        failure_persistence: if persist {
            Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS)))
        } else {
            None
        },
        max_shrink_time: 30_000,
        ..defaults
    }
}

/// Runs `check` on a thread with a 64 MiB stack: routes files, conditions and templates are
/// compiled on the `bridge` main thread (8 MiB in a release build), and a debug build's
/// frames are several times larger. A panic inside is passed on for proptest to shrink.
fn on_a_large_stack<T: Send>(check: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn_scoped(scope, check)
            .expect("the test starts a thread");
        match worker.join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// The name a routes file is given in errors.
const FILE_NAME: &str = "fuzz.yaml";

/// An environment in which every variable is `value`, or none is set.
fn every_variable(value: Option<String>) -> impl Fn(&str) -> Option<String> + Send {
    move |_: &str| value.clone()
}

/// Loads `text` as a routes file in `env` and hands the outcome to `inspect`.
fn load_and<T: Send>(
    text: &str,
    env: impl Fn(&str) -> Option<String> + Send,
    inspect: impl FnOnce(Result<Plan, ConfigErrors>) -> T + Send,
) -> T {
    on_a_large_stack(move || inspect(config::load_str(text, FILE_NAME, &env)))
}

/// How many lines YAML sees in `text`: it breaks lines at `\n`, `\r\n` and a lone `\r`.
fn yaml_line_count(text: &str) -> usize {
    text.replace("\r\n", "\n").matches(['\n', '\r']).count() + 1
}

/// A refused routes file says why, and each reason points at a line of the file.
fn check_refusal(errors: &ConfigErrors, text: &str) -> TestCaseResult {
    prop_assert!(!errors.errors.is_empty(), "refused without a reason");
    prop_assert_eq!(errors.file.as_str(), FILE_NAME);
    let lines = yaml_line_count(text);
    let report = errors.to_string();
    for error in &errors.errors {
        prop_assert!(
            !error.message.trim().is_empty(),
            "an error without a message: {error:?}"
        );
        prop_assert!(
            error
                .line
                .is_some_and(|line| (1..=lines + 1).contains(&line)),
            "{error:?} is not on one of the {lines} lines of the file"
        );
        prop_assert!(
            error.column.is_none_or(|column| column >= 1),
            "column 0 in {error:?}"
        );
        prop_assert!(
            report.contains(&error.message),
            "the report leaves out {error:?}:\n{report}"
        );
    }
    Ok(())
}

/// What a plan that validated promises (docs/configuration.md states each bound).
fn check_plan(plan: &Plan) -> TestCaseResult {
    prop_assert!(plan.settings.max_hops >= 1);
    prop_assert!(check_listen(&plan.settings.http.listen).is_ok());
    prop_assert!(!plan.settings.http.backlog_interval.is_zero());
    let mut names = HashSet::new();
    for route in &plan.routes {
        let name = route.name.as_str();
        prop_assert!(!name.trim().is_empty(), "a route without a name");
        prop_assert!(names.insert(name), "two routes are called {name:?}");
        prop_assert!(route.max_in_flight >= 1);
        prop_assert!(route.retry.max_attempts >= 1);
        prop_assert!(route.retry.initial_backoff <= route.retry.max_backoff);
        prop_assert!(
            route.retry.multiplier >= 1.0,
            "multiplier {}",
            route.retry.multiplier
        );
        prop_assert!(
            plan.connections
                .contains_key(&route.source.endpoint.connection)
        );
        prop_assert!(
            route.sinks.iter().any(|sink| !sink.optional),
            "route {name:?} has no required sink"
        );
        for sink in route.sinks.iter().chain(&route.dead_letter) {
            prop_assert!(
                plan.connections.contains_key(&sink.connection),
                "route {name:?} sends to undefined connection {:?}",
                sink.connection
            );
        }
        if let Some(reply) = &route.reply {
            prop_assert!(!reply.timeout.is_zero());
            prop_assert!(plan.signer.is_some(), "route {name:?} relays without a key");
        }
    }
    Ok(())
}

/// A YAML double-quoted scalar holding `text` (a JSON string is one, but for a few control
/// characters YAML wants escaped: those make the file invalid, which is fine here too).
fn quoted(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

/// `text` with every `$` escaped, so that interpolation gives back `text`.
fn escape_dollars(text: &str) -> String {
    text.replace('$', "$$")
}

/// A routes file on a `memory` and a `stdio` connection with the given field values.
fn routes_file(settings: &SettingsFields, routes: &[RouteFields]) -> String {
    let mut lines = vec![
        "settings:".to_owned(),
        format!("  drain_timeout: {}", quoted(&settings.drain_timeout)),
        format!("  max_hops: {}", settings.max_hops),
        format!(
            "  http: {{listen: {}, backlog_interval: {}}}",
            quoted(&settings.listen),
            quoted(&settings.backlog_interval)
        ),
        "connections:".to_owned(),
        "  mem: {type: memory}".to_owned(),
        "  io: {type: stdio}".to_owned(),
        "routes:".to_owned(),
    ];
    for route in routes {
        lines.push(format!("  - name: {}", quoted(&route.name)));
        lines.push(format!("    from: {}", quoted(&route.from)));
        lines.push("    to:".to_owned());
        for sink in &route.sinks {
            lines.push(format!("      - endpoint: {}", quoted(&sink.endpoint)));
            if let Some(key) = &sink.key {
                lines.push(format!("        key: {}", quoted(key)));
            }
            if let Some(when) = &sink.when {
                lines.push(format!("        when: {}", quoted(when)));
            }
            lines.push(format!("        optional: {}", sink.optional));
        }
        if let Some(when) = &route.when {
            lines.push(format!("    when: {}", quoted(when)));
        }
        if let Some(dead_letter) = &route.dead_letter {
            lines.push(format!("    dead_letter: {}", quoted(dead_letter)));
        }
        let retry = &route.retry;
        lines.push(format!(
            "    retry: {{max_attempts: {}, initial_backoff: {}, max_backoff: {}, multiplier: {}, max_elapsed: {}}}",
            retry.max_attempts,
            quoted(&retry.initial_backoff),
            quoted(&retry.max_backoff),
            retry.multiplier,
            quoted(&retry.max_elapsed)
        ));
        lines.push(format!("    ordering: {}", quoted(&route.ordering)));
        lines.push(format!("    max_in_flight: {}", route.max_in_flight));
    }
    lines.join("\n") + "\n"
}

/// At least 16 bytes, as `settings.reply_signing_key` requires.
const SIGNING_KEY: &str = "a-signing-key-of-32-characters!!";

/// A valid request-reply route whose only variable part is the reply timeout.
fn reply_route_file(timeout: &str) -> String {
    format!(
        "settings:\n  reply_signing_key: {SIGNING_KEY}\nconnections:\n  mem: {{type: memory}}\nroutes:\n  - name: relay\n    from: mem:requests\n    to: mem:service\n    reply:\n      from: mem:replies\n      timeout: {}\n",
        quoted(timeout)
    )
}

/// `message` as the JSON form gives it back: timestamps to the millisecond.
fn at_millisecond_precision(mut message: Message) -> Message {
    message.timestamp = message.timestamp.map(|time| {
        match time.duration_since(UNIX_EPOCH) {
            Ok(since) => {
                let millis = u64::try_from(since.as_millis()).unwrap_or(u64::MAX);
                UNIX_EPOCH + Duration::from_millis(millis)
            }
            // Decoding never gives one; left as is, the comparison will show it.
            Err(_) => time,
        }
    });
    message
}

/// An HMAC key that differs from `key` by more than trailing zero bytes (HMAC pads short
/// keys with zeros, so `k` and `k\0` are one key): one byte flipped, or one non-zero added.
fn another_key(key: &[u8], at: &Index, flip: u8) -> Vec<u8> {
    let mut other = key.to_vec();
    if other.is_empty() {
        other.push(flip);
    } else {
        let at = at.index(other.len());
        other[at] ^= flip;
    }
    other
}

// ---------------------------------------------------------------------------------------
// Routes files
// ---------------------------------------------------------------------------------------

/// A YAML value nested `depth` levels deep, in block or flow style, with an anchor and an
/// alias of it when `alias`.
fn nested_yaml(depth: usize, flow: bool, alias: bool) -> String {
    let leaf = if alias { "*a" } else { "x" };
    let inner = if flow || depth == 0 {
        "[".repeat(depth) + leaf + &"]".repeat(depth)
    } else {
        "\n  ".to_owned() + &"- ".repeat(depth) + leaf
    };
    let anchor = if alias { "anchor: &a 1\n" } else { "" };
    format!("{anchor}settings:\n  http: {{listen: off}}\nextra: {inner}\n")
}

proptest! {
    #![proptest_config(fuzz_config(256))]

    /// Nesting deeper than the limit and any alias are refused before the file is built,
    /// with a line; anything else gets its ordinary verdict (here, an unknown field).
    #[test]
    fn deep_nesting_and_aliases_are_refused_with_their_line(
        depth in 0usize..80,
        flow in any::<bool>(),
        alias in any::<bool>(),
    ) {
        let text = nested_yaml(depth, flow, alias);
        load_and(&text, every_variable(None), |result| -> TestCaseResult {
            let errors = match result {
                Ok(_) => return Err(TestCaseError::fail("`extra` is an unknown field")),
                Err(errors) => errors,
            };
            check_refusal(&errors, &text)?;
            let report = errors.to_string();
            // The file's own mapping is one level, each list of `extra` another.
            if depth + 1 > 32 {
                prop_assert!(report.contains("nested more than 32"), "{report}");
            } else if alias {
                prop_assert!(report.contains("aliases"), "{report}");
            } else {
                prop_assert!(report.contains("unknown field `extra`"), "{report}");
            }
            Ok(())
        })?;
    }

    /// A value from the environment is never quoted in an error, whatever it holds: the
    /// error names the variable instead.
    #[test]
    fn an_interpolated_value_is_never_quoted_in_an_error(
        secret in "Zq[A-Za-z0-9/?#@:%]{4,16}",
        field in prop::sample::select(vec![
            "url: '${V}'",
            "url: 'amqp://u:${V}@h/%2f'",
            "url: 'amqp://u:${V}@h:99999/%2f'",
            "url: '${V}', connect_timeout_ms: '${V}'",
        ]),
    ) {
        let text = format!(
            "connections:\n  rabbit: {{type: rabbitmq, {field}}}\nroutes:\n  - name: r\n    from: rabbit:queue/q\n    to: rabbit:queue/out\n    dead_letter: rabbit:queue/dlq\n    dedup: {{store: '${{V}}'}}\n"
        );
        let value = secret.clone();
        let env = move |name: &str| (name == "V").then(|| value.clone());
        load_and(&text, env, |result| -> TestCaseResult {
            if let Err(errors) = result {
                let report = errors.to_string();
                prop_assert!(!report.contains(&secret), "{report}");
                prop_assert!(report.contains("${V}"), "{report}");
            }
            Ok(())
        })?;
    }
}

/// How big a message is, as `limits.max_message_bytes` counts it, written out field by
/// field (an independent reading of docs/security.md).
fn counted_bytes(message: &Message) -> usize {
    let text = |t: &Option<String>| t.as_deref().map_or(0, str::len);
    message.body.len()
        + message.key.as_ref().map_or(0, |k| k.len())
        + text(&message.correlation_id)
        + text(&message.reply_to)
        + text(&message.message_id)
        + text(&message.content_type)
        + message
            .headers
            .iter()
            .map(|(n, v)| n.len() + v.as_bytes().len())
            .sum::<usize>()
}

proptest! {
    #![proptest_config(fuzz_config(512))]

    /// A message passes its limits exactly when every count is within its limit, and a
    /// refusal names the limit it broke.
    #[test]
    fn limits_refuse_exactly_what_is_over_them_and_say_which(
        message in any_message(),
        max_message_bytes in 1usize..400,
        max_headers in 1usize..6,
        max_header_name_bytes in 1usize..12,
        max_header_value_bytes in 1usize..24,
    ) {
        let limits = Limits { max_message_bytes, max_headers, max_header_name_bytes, max_header_value_bytes };
        let over_headers = message.headers.len() > max_headers;
        let over_name = message.headers.iter().any(|(n, _)| n.len() > max_header_name_bytes);
        let over_value = message.headers.iter().any(|(_, v)| v.as_bytes().len() > max_header_value_bytes);
        let over_bytes = counted_bytes(&message) > max_message_bytes;
        match limits.check(&message) {
            Ok(()) => prop_assert!(!(over_headers || over_name || over_value || over_bytes)),
            Err(reason) => {
                let named = [
                    ("limits.max_headers", over_headers),
                    ("limits.max_header_name_bytes", over_name),
                    ("limits.max_header_value_bytes", over_value),
                    ("limits.max_message_bytes", over_bytes),
                ];
                prop_assert!(
                    named.iter().any(|(setting, over)| *over && reason.contains(setting)),
                    "{reason}"
                );
            }
        }
    }

    /// `reply.allow` patterns match as a plain backtracking reading of `*` (no `/` or `:`)
    /// and `**` (anything) says.
    #[test]
    fn reply_patterns_match_as_their_wildcards_say(
        pattern in "(a|b|/|:|\\*|\\*\\*){0,6}",
        address in "[ab/:]{0,8}",
    ) {
        fn reference(pattern: &[u8], text: &[u8]) -> bool {
            match pattern {
                [] => text.is_empty(),
                [b'*', b'*', rest @ ..] => (0..=text.len()).any(|i| reference(rest, &text[i..])),
                [b'*', rest @ ..] => (0..=text.len())
                    .take_while(|&i| i == 0 || !matches!(text[i - 1], b'/' | b':'))
                    .any(|i| reference(rest, &text[i..])),
                [c, rest @ ..] => text.first() == Some(c) && reference(rest, &text[1..]),
            }
        }
        prop_assume!(!pattern.is_empty() && pattern != "default");
        let allow = ReplyAllow::compile(std::slice::from_ref(&pattern)).unwrap();
        prop_assert_eq!(
            allow.permits(&address, |_| false),
            reference(pattern.as_bytes(), address.as_bytes()),
            "{} against {}", pattern, address
        );
    }
}

proptest! {
    #![proptest_config(fuzz_config(512))]

    /// Any text is either a valid plan or refused with every error located in the file.
    #[test]
    fn any_text_is_a_valid_plan_or_refused_with_located_errors(
        text in routes_file_text(),
        variable in variable_value(),
    ) {
        load_and(&text, every_variable(variable), |result| match result {
            Ok(plan) => check_plan(&plan),
            Err(errors) => check_refusal(&errors, &text),
        })?;
    }

    /// Interpolation fills in variables and defaults and turns `$$` into `$`, in any text.
    #[test]
    fn interpolation_fills_in_variables_and_defaults_and_unescapes_dollars(
        before in "\\PC{0,8}",
        value in ".{0,8}",
        between in "\\PC{0,8}",
        default in "[^}\\p{C}]{0,8}",
    ) {
        let name = format!(
            "{}${{NAME}}{}${{UNSET:-{default}}}",
            escape_dollars(&before),
            escape_dollars(&between)
        );
        let expected = format!("{before}{value}{between}{default}");
        let text = format!(
            "connections:\n  mem: {{type: memory}}\nroutes:\n  - name: {}\n    from: mem:in\n    to: mem:out\n",
            quoted(&name)
        );
        let env = move |variable: &str| (variable == "NAME").then(|| value.clone());
        load_and(&text, env, |result| -> TestCaseResult {
            match result {
                Ok(plan) => prop_assert_eq!(&plan.routes[0].name, &expected),
                Err(errors) => {
                    // Only a blank name may be refused.
                    prop_assert!(expected.trim().is_empty(), "refused: {errors}");
                    check_refusal(&errors, &text)?;
                }
            }
            Ok(())
        })?;
    }
}

proptest! {
    #![proptest_config(fuzz_config(128))]

    /// The example file after a few careless edits: valid, or refused with located errors.
    #[test]
    fn the_example_file_after_edits_is_valid_or_refused_with_located_errors(
        edits in prop::collection::vec(edit(), 1..4),
        variable in variable_value(),
    ) {
        let text = edits.iter().fold(EXAMPLE.to_owned(), |text, edit| edit.apply(&text));
        load_and(&text, every_variable(variable), |result| match result {
            Ok(plan) => check_plan(&plan),
            Err(errors) => check_refusal(&errors, &text),
        })?;
    }

    /// A well-formed file with any value in any field: valid with every bound kept, or
    /// refused with located errors.
    #[test]
    fn any_field_values_give_a_plan_within_bounds_or_located_errors(
        settings in settings_fields(),
        routes in prop::collection::vec(route_fields(), 1..3),
    ) {
        let text = routes_file(&settings, &routes);
        load_and(&text, every_variable(None), |result| match result {
            Ok(plan) => check_plan(&plan),
            Err(errors) => check_refusal(&errors, &text),
        })?;
    }

    /// Every reply timeout the routes file accepts can be used to relay a request, and
    /// the reply is matched while the timeout runs.
    #[test]
    fn every_accepted_reply_timeout_can_relay_a_request(timeout in duration_text()) {
        let text = reply_route_file(&timeout);
        load_and(&text, every_variable(None), |result| -> TestCaseResult {
            let plan = match result {
                Ok(plan) => plan,
                Err(errors) => return check_refusal(&errors, &text),
            };
            check_plan(&plan)?;
            let reply = plan.routes[0].reply.as_ref().expect("the route relays replies");
            let signer = plan.signer.clone().expect("the file has a signing key");
            let mut request = Message::new("request");
            request.reply_to = Some("requester".into());
            RequestRelay {
                signer: signer.clone(),
                address: reply.address.clone(),
                timeout: reply.timeout,
            }
            .apply(&mut request);
            let mut answer = Message::new("answer");
            answer.correlation_id = request.correlation_id;
            let restored = ReplyRelay { signer, unmatched: reply.unmatched, allow: ReplyAllow::default() }.restore(&mut answer);
            // A very short timeout may have run out already; a minute cannot have.
            if reply.timeout >= Duration::from_secs(60) {
                prop_assert!(restored.is_ok(), "{restored:?} for a timeout of {timeout}");
                prop_assert_eq!(answer.reply_to.as_deref(), Some("requester"));
            }
            Ok(())
        })?;
    }
}

// ---------------------------------------------------------------------------------------
// Conditions and templates
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(fuzz_config(256))]

    /// A condition compiles or says why; a compiled one evaluates any message to a
    /// boolean or an error with a message.
    #[test]
    fn conditions_compile_or_say_why_and_evaluate_any_message(
        source in condition_text(),
        message in any_message(),
    ) {
        on_a_large_stack(|| -> TestCaseResult {
            match Condition::compile(&source) {
                Err(reason) => prop_assert!(!reason.trim().is_empty()),
                Ok(condition) => {
                    prop_assert_eq!(condition.source(), source.as_str());
                    if let Err(error) = condition.matches(&message) {
                        prop_assert!(!error.to_string().trim().is_empty());
                    }
                }
            }
            Ok(())
        })?;
    }

    /// A template compiles or says why; text without `{{` or `{%` is constant and renders
    /// as itself; a compiled one renders any message or fails with a message.
    #[test]
    fn templates_compile_or_say_why_and_render_any_message(
        source in template_text(),
        message in any_message(),
    ) {
        on_a_large_stack(|| -> TestCaseResult {
            let has_syntax = source.contains("{{") || source.contains("{%");
            match Template::compile(&source) {
                Err(reason) => {
                    prop_assert!(has_syntax, "plain text refused: {reason}");
                    prop_assert!(!reason.trim().is_empty());
                }
                Ok(template) => {
                    prop_assert_eq!(template.source(), source.as_str());
                    prop_assert_eq!(template.is_constant(), !has_syntax);
                    match template.render(&message) {
                        Ok(text) if template.is_constant() => prop_assert_eq!(&text, &source),
                        Ok(_) => {}
                        Err(error) => {
                            prop_assert!(!template.is_constant(), "a constant failed: {error}");
                            prop_assert!(!error.to_string().trim().is_empty());
                        }
                    }
                }
            }
            Ok(())
        })?;
    }
}

// ---------------------------------------------------------------------------------------
// The JSON line form of a message
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(fuzz_config(1000))]

    /// Every field the JSON form carries comes back as it was; `origin` is not read.
    #[test]
    fn json_lines_round_trip(message in any_message()) {
        let line = json::encode(&message);
        prop_assert!(!line.contains('\n'), "one message, one line: {line}");
        let decoded = json::decode(&line)
            .map_err(|error| TestCaseError::fail(format!("{error}: {line}")))?;
        prop_assert_eq!(decoded, message.without_origin());
    }

    /// Any message a source can receive, whatever its timestamp, encodes to a line that
    /// decodes (the `stdout` sink and `bridge tail --json` write every message they get).
    #[test]
    fn every_message_encodes_to_a_line_that_decodes(
        message in message_with(prop::option::of(any_time())),
    ) {
        let line = json::encode(&message);
        prop_assert!(json::decode(&line).is_ok(), "encode wrote a line decode refuses: {line}");
    }

    /// Garbage is refused with a reason; whatever is accepted encodes and decodes back to
    /// itself (at the millisecond precision the form keeps).
    #[test]
    fn json_decoding_refuses_garbage_and_what_it_accepts_is_stable(line in json_line_text()) {
        match json::decode(&line) {
            Err(error) => prop_assert!(!error.to_string().trim().is_empty()),
            Ok(message) => {
                prop_assert!(message.origin().is_none(), "origin read from {line}");
                let again = json::decode(&json::encode(&message))
                    .map_err(|error| TestCaseError::fail(error.to_string()))?;
                prop_assert_eq!(again, at_millisecond_precision(message));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Correlation tokens and the request-reply relay
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(fuzz_config(512))]

    #[test]
    fn tokens_read_back_the_claims_they_were_made_from(
        key in signing_key(),
        claims in claims(),
    ) {
        let signer = Signer::new(&key);
        let token = signer.encode(&claims);
        prop_assert_eq!(signer.decode(&token), Ok(claims));
    }

    /// Without the key, no text is a token: what a replier makes up is refused.
    #[test]
    fn text_the_signer_did_not_make_is_refused(key in signing_key(), text in token_like_text()) {
        let decoded = Signer::new(&key).decode(&text);
        prop_assert!(decoded.is_err(), "{text:?} accepted as {decoded:?}");
    }

    #[test]
    fn a_token_with_any_character_changed_is_refused(
        key in signing_key(),
        claims in claims(),
        at in any::<Index>(),
        replacement in any::<char>(),
    ) {
        let signer = Signer::new(&key);
        let mut characters: Vec<char> = signer.encode(&claims).chars().collect();
        let at = at.index(characters.len());
        prop_assume!(characters[at] != replacement);
        characters[at] = replacement;
        let altered: String = characters.into_iter().collect();
        prop_assert!(signer.decode(&altered).is_err(), "{altered} accepted");
    }

    #[test]
    fn a_truncated_token_is_refused(
        key in signing_key(),
        claims in claims(),
        cut in any::<Index>(),
    ) {
        let signer = Signer::new(&key);
        let token = signer.encode(&claims);
        prop_assert!(token.is_ascii());
        let cut = cut.index(token.len());
        prop_assert!(
            signer.decode(&token[..cut]).is_err(),
            "the first {cut} of the {} characters of {token} were accepted",
            token.len()
        );
    }

    #[test]
    fn a_token_is_refused_under_any_other_key(
        key in signing_key(),
        claims in claims(),
        at in any::<Index>(),
        flip in 1..=u8::MAX,
    ) {
        let token = Signer::new(&key).encode(&claims);
        let other = Signer::new(&another_key(&key, &at, flip));
        prop_assert_eq!(other.decode(&token), Err(TokenError::BadSignature));
    }

    /// A request relayed and its reply restored give the requester back its reply-to and
    /// correlation id, whatever they are.
    #[test]
    fn a_relayed_reply_gets_back_the_requesters_correlation(
        key in signing_key(),
        reply_to in any::<String>(),
        correlation_id in any::<Option<String>>(),
        request in any_message(),
    ) {
        let signer = Signer::new(&key);
        let mut request = request;
        request.reply_to = Some(reply_to.clone());
        request.correlation_id = correlation_id.clone();
        RequestRelay {
            signer: signer.clone(),
            address: "replies".into(),
            timeout: Duration::from_secs(3600),
        }
        .apply(&mut request);
        prop_assert_eq!(request.reply_to.as_deref(), Some("replies"));
        let mut reply = Message::new("answer");
        reply.correlation_id = request.correlation_id;
        ReplyRelay { signer, unmatched: Unmatched::DeadLetter, allow: ReplyAllow::default() }
            .restore(&mut reply)
            .map_err(|refusal| TestCaseError::fail(refusal.to_string()))?;
        prop_assert_eq!(reply.correlation_id, correlation_id);
        prop_assert_eq!(reply.reply_to, Some(reply_to));
    }

    /// A reply whose correlation id the relay did not make is refused and left untouched.
    #[test]
    fn a_reply_with_a_made_up_correlation_id_is_refused_untouched(
        key in signing_key(),
        correlation_id in prop::option::of(token_like_text()),
        reply in any_message(),
    ) {
        let mut reply = reply;
        reply.correlation_id = correlation_id;
        let before = reply.clone();
        let relay = ReplyRelay { signer: Signer::new(&key), unmatched: Unmatched::Drop, allow: ReplyAllow::default() };
        prop_assert!(relay.restore(&mut reply).is_err());
        prop_assert_eq!(reply, before);
    }
}

proptest! {
    #![proptest_config(fuzz_config(64))]

    /// The tag is what needs the key: a forger who keeps a token's public payload and
    /// tries every one-byte tag must not get in (256 tries would forge any token).
    #[test]
    fn a_token_with_a_one_byte_tag_is_refused(key in signing_key(), claims in claims()) {
        let signer = Signer::new(&key);
        let token = signer.encode(&claims);
        let (signed, _tag) = token.rsplit_once('.').expect("a token ends with its tag");
        for guess in 0..=u8::MAX {
            let forged = format!("{signed}.{}", URL_SAFE_NO_PAD.encode([guess]));
            prop_assert!(signer.decode(&forged).is_err(), "forged with a one-byte tag: {forged}");
        }
    }

    /// `b1.` and a short tag, with no payload at all, is refused, whatever the tag.
    #[test]
    fn a_prefix_and_a_short_tag_without_payload_is_refused(key in signing_key()) {
        let signer = Signer::new(&key);
        for guess in 0..=u8::MAX {
            let text = format!("b1.{}", URL_SAFE_NO_PAD.encode([guess]));
            prop_assert!(signer.decode(&text).is_err(), "{text} accepted");
        }
    }
}

proptest! {
    #![proptest_config(fuzz_config(16))]

    /// An address longer than the token's 16-bit length field is cut, but the signer
    /// still reads back its own token, with a prefix of the address.
    #[test]
    fn a_token_for_an_over_long_address_still_reads_back(
        key in signing_key(),
        lead in 0..3usize,
        repeat in 32_767..32_770usize,
    ) {
        // Two-byte characters after 0 to 2 one-byte ones: the cut falls inside a character
        // or between two.
        let reply_to = "a".repeat(lead) + &"é".repeat(repeat);
        let claims = Claims { reply_to: reply_to.clone(), correlation_id: None, deadline: UNIX_EPOCH };
        let signer = Signer::new(&key);
        let decoded = signer
            .decode(&signer.encode(&claims))
            .map_err(|error| TestCaseError::fail(format!("its own token refused: {error}")))?;
        prop_assert!(reply_to.starts_with(&decoded.reply_to));
    }
}

// ---------------------------------------------------------------------------------------
// Addresses, URLs, headers and the command line
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(fuzz_config(1000))]

    /// An accepted address is a valid connection name and a path, written back as it was
    /// read; a refused one says why.
    #[test]
    fn endpoint_addresses_are_written_back_as_read_or_refused(text in address_text()) {
        match text.parse::<Endpoint>() {
            Ok(endpoint) => {
                prop_assert!(is_connection_name(&endpoint.connection));
                prop_assert!(!endpoint.path.is_empty());
                prop_assert_eq!(endpoint.to_string(), text);
            }
            Err(error) => prop_assert!(!error.to_string().trim().is_empty()),
        }
    }

    #[test]
    fn every_well_formed_address_is_accepted(
        connection in "[A-Za-z0-9_-]{1,12}",
        path in ".{1,24}",
    ) {
        let endpoint: Endpoint = format!("{connection}:{path}")
            .parse()
            .map_err(|error: bridge::address::AddressError| TestCaseError::fail(error.to_string()))?;
        prop_assert_eq!(endpoint, Endpoint { connection, path });
    }

    #[test]
    fn every_socket_address_is_a_valid_listen_address(address in socket_address()) {
        prop_assert_eq!(check_listen(&address.to_string()), Ok(()));
    }

    /// An accepted listen address is `off` or has a port; a refused one is told the form.
    #[test]
    fn listen_addresses_are_accepted_with_a_port_or_refused_with_the_form(text in listen_text()) {
        match check_listen(&text) {
            Ok(()) => prop_assert!(text == "off" || text.contains(':'), "{text:?} accepted"),
            Err(reason) => prop_assert!(reason.contains("HOST:PORT"), "{reason}"),
        }
    }

    #[test]
    fn redacted_urls_never_show_the_password(
        scheme in "[a-z][a-z0-9+.-]{0,8}",
        user in "[a-z0-9._~-]{0,8}",
        // Upper case, where nothing else is: found in the output only if it leaked. Every
        // URL-reserved character may appear raw, which makes the URL unparseable.
        password in "P[A-Z0-9:@/?#%]{0,12}",
        host in "[a-z0-9.-]{0,12}(:[0-9]{1,5})?",
        tail in "([/?#][a-z0-9/?#=&%-]{0,12})?",
    ) {
        let redacted = redact_url(&format!("{scheme}://{user}:{password}@{host}{tail}"));
        prop_assert!(!redacted.contains(&password), "{redacted}");
        prop_assert_eq!(redacted, format!("{scheme}://{user}:***@{host}{tail}"));
    }

    #[test]
    fn text_without_credentials_is_not_redacted(text in "[^@]{0,16}") {
        if !text.contains("://") {
            prop_assert_eq!(redact_url(&text), text);
        }
    }

    /// A URL with a mistyped scheme is shown in the error that refuses it: its password
    /// must not be.
    #[test]
    fn a_mistyped_url_never_shows_the_password(
        scheme in "[a-z]{1,6}(:|/|//|:/)?",
        user in "[a-z0-9._~-]{0,8}",
        password in "P[A-Z0-9]{0,12}",
        host in "[a-z0-9.-]{0,12}(:[0-9]{1,5})?(/[a-z%0-9]{0,6})?",
    ) {
        let text = format!("{scheme}{user}:{password}@{host}");
        prop_assume!(!text.contains("://"));
        let redacted = redact_url(&text);
        prop_assert!(!redacted.contains(&password), "{}", redacted);
    }

    #[test]
    fn binary_header_name_lists_round_trip(
        names in prop::collection::vec("[a-z,%2C5]{0,8}|.{0,8}", 0..6),
    ) {
        let joined = reserved::join_names(names.iter().map(String::as_str));
        prop_assert_eq!(reserved::split_names(&joined), names);
    }

    /// Whatever a sender put in the list, reading it gives one name per non-empty entry,
    /// empty only for the entry that stands for the empty name.
    #[test]
    fn binary_header_name_lists_from_anyone_give_one_name_per_entry(value in "[a-z,%2C50]{0,12}|.{0,16}") {
        let entries: Vec<&str> = value.split(',').filter(|e| !e.is_empty()).collect();
        let names = reserved::split_names(&value);
        prop_assert_eq!(names.len(), entries.len());
        for (name, entry) in names.iter().zip(entries) {
            prop_assert_eq!(name.is_empty(), entry == "%00");
        }
    }

    #[test]
    fn untyped_header_values_keep_their_bytes(bytes in prop::collection::vec(any::<u8>(), 0..32)) {
        let value = HeaderValue::from_untyped(&bytes);
        prop_assert_eq!(value.as_bytes(), bytes.as_slice());
        prop_assert_eq!(value.as_text().is_some(), std::str::from_utf8(&bytes).is_ok());
    }

    /// The hop count and trace id are read from any headers a broker delivers; one more
    /// hop is always one more (or the most a u32 holds), in a single header.
    #[test]
    fn hop_counts_and_trace_ids_are_read_from_any_headers(headers in headers()) {
        let mut message = Message::new("x");
        message.headers = headers;
        let hops = message.hops();
        message.increment_hops();
        prop_assert_eq!(message.hops(), hops.saturating_add(1));
        let hop_headers = message.headers.iter().filter(|(name, _)| *name == reserved::HOPS);
        prop_assert_eq!(hop_headers.count(), 1);
        if let Some(trace_id) = message.trace_id() {
            prop_assert_eq!(trace_id.len(), 32);
            prop_assert!(trace_id.bytes().all(|byte| byte.is_ascii_hexdigit()));
        }
    }
}

proptest! {
    #![proptest_config(fuzz_config(256))]

    /// A `--url` is read or refused with a reason; a connection read from one checks any
    /// endpoint path and options without panicking, and says why it refuses.
    #[test]
    fn connection_urls_and_their_endpoints_are_checked_or_refused_with_a_reason(
        url in connection_url(),
        path in endpoint_path(),
        options in options_value(),
    ) {
        let spec = match connection_from_url(&url) {
            Ok(spec) => spec,
            Err(reason) => {
                prop_assert!(!reason.trim().is_empty());
                return Ok(());
            }
        };
        prop_assert!(!spec.describe().trim().is_empty());
        for role in [Role::Source, Role::Sink] {
            if let Err(reason) = spec.check_endpoint(&path, role) {
                prop_assert!(!reason.trim().is_empty(), "no reason for {path:?} as {role:?}");
            }
        }
        let parsed = match spec.source_options(&path, &options) {
            Ok(parsed) => parsed,
            Err(reason) => {
                prop_assert!(!reason.trim().is_empty(), "no reason for options {options:?}");
                SourceOptions::none()
            }
        };
        if let Err(reason) = spec.check_reject_without_dead_letter(&path, &parsed) {
            prop_assert!(!reason.trim().is_empty());
        }
        if let Some(address) = spec.reply_address(&path) {
            prop_assert!(path.ends_with(&address), "reply address {address:?} from {path:?}");
        }
    }

    /// A user's password in an AMQP URL is in neither the connection's description nor
    /// the reason the URL is refused.
    #[cfg(feature = "rabbitmq")]
    #[test]
    fn amqp_passwords_never_reach_descriptions_or_errors(
        user in "[a-z]{1,8}",
        // Upper case, where nothing else is: found in the output only if it leaked.
        password in "P[A-Z0-9]{5,12}",
        host in "[a-z0-9.-]{0,12}",
        rest in "(:[0-9]{0,6})?(/[a-z%0-9]{0,6})?(\\?[a-z_]{0,10}=[a-z0-9]{0,4})?",
    ) {
        let url = format!("amqp://{user}:{password}@{host}{rest}");
        let shown = match connection_from_url(&url) {
            Ok(spec) => spec.describe(),
            Err(reason) => reason,
        };
        prop_assert!(!shown.contains(&password), "{shown:?} for {url}");
    }

    /// Any command line parses or explains itself (usage errors, `--help` and `--version`
    /// are errors with text); a parsed one runs a subcommand that was written.
    #[test]
    fn command_lines_parse_or_explain_themselves(args in command_line()) {
        let argv = std::iter::once("bridge".to_owned()).chain(args.iter().cloned());
        match Cli::try_parse_from(argv) {
            Ok(cli) => {
                let subcommand = match cli.command {
                    Command::Run(_) => "run",
                    Command::Validate(_) => "validate",
                    Command::Send(_) => "send",
                    Command::Tail(_) => "tail",
                    Command::Request(_) => "request",
                    Command::Explain(_) => "explain",
                    Command::Test(_) => "test",
                    Command::Dlq(_) => "dlq",
                };
                prop_assert!(args.iter().any(|arg| arg == subcommand), "{subcommand} from {args:?}");
            }
            Err(error) => prop_assert!(!error.to_string().trim().is_empty()),
        }
    }
}

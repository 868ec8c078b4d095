//! Secrets read from the routes file or the command line (passwords, signing keys, the
//! credentials inside URLs): usable by the code that needs them, never shown.
//!
//! Three layers keep them out of every output:
//! - [`Secret`] and [`SecretUrl`] hold them in the configuration: `Debug` prints
//!   `<redacted>` or the URL with its password replaced by `***`, and there is no
//!   `Display`, so a secret cannot slip into a log line, an error or `bridge tail`'s
//!   connection summary.
//! - [`redact_url`] and [`hide_url_secrets`] take the password out of any text that quotes
//!   a URL, even a URL that does not parse (a raw `/`, `?`, `#`, `@` or `:` in the
//!   password): everything before the last `@` is treated as credentials.
//! - Every secret read is also remembered in a process-wide list, and [`scrub`] replaces
//!   each remembered value found in a text. Log lines go through it (including those of
//!   the client libraries, at every level), so a library that prints a credential at
//!   `trace` still prints `***`.

use std::borrow::Cow;
use std::fmt;
use std::sync::RwLock;

use serde::{Deserialize, Deserializer};

/// What replaces a secret in output.
pub const MASK: &str = "***";

/// A password, key or token.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A secret; its value is remembered for [`scrub`].
    pub fn new(value: impl Into<String>) -> Secret {
        let value = value.into();
        remember(&value);
        Secret(value)
    }

    /// The value, for the one place that hands it to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret::new)
    }
}

/// A URL that may carry credentials (`amqp://user:PASSWORD@host/vhost`).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// A URL; its password is remembered for [`scrub`].
    pub fn new(url: impl Into<String>) -> SecretUrl {
        let url = url.into();
        for password in url_passwords(&url) {
            remember(&password);
        }
        SecretUrl(url)
    }

    /// The URL with its credentials, for the client library that connects.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its password replaced by `***`, safe to print.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(SecretUrl::new)
    }
}

/// A URL cut around its credentials: what is kept before them, the credentials, and what
/// follows their `@`.
struct Credentials<'u> {
    kept: &'u str,
    secret: &'u str,
    after: &'u str,
}

/// Finds the credentials of `url`: everything between the scheme (or the start) and the
/// last `@`, less a user name that can be told apart safely. A password may hold any of
/// `/ ? # @ :` unescaped, which makes the URL unparseable; cutting at the last `@` keeps
/// such a password hidden too (at worst a path holding an `@` is hidden with it).
fn credentials(url: &str) -> Option<Credentials<'_>> {
    let at = url.rfind('@')?;
    let before = &url[..at];
    let start = before.find("://").map_or(0, |scheme| scheme + 3);
    let userinfo = &before[start..];
    // `scheme://USER:...`: the user is shown when it holds nothing a password might.
    let user_end = match userinfo.find(':') {
        Some(colon) if start > 0 && !userinfo[..colon].contains(['/', '?', '#']) => colon + 1,
        // Not a URL (`amqps//user:pw@host`, `amqp:user:pw@host`): keep up to the first
        // `/` or `:`, a scheme or a user name.
        Some(_) | None if start == 0 => userinfo.find(['/', ':']).map_or(0, |end| end + 1),
        _ => 0,
    };
    Some(Credentials {
        kept: &url[..start + user_end],
        secret: &userinfo[user_end..],
        after: &url[at + 1..],
    })
}

/// `url` with any password replaced by `***`, safe to print, whether or not it parses.
pub fn redact_url(url: &str) -> String {
    match credentials(url) {
        Some(found) => format!("{}{MASK}@{}", found.kept, found.after),
        None => url.to_owned(),
    }
}

/// The secret parts of `url` as written and percent-decoded (empty when it has none).
pub fn url_secrets(url: &str) -> Vec<String> {
    let Some(found) = credentials(url) else {
        return Vec::new();
    };
    let mut secrets = vec![found.secret.to_owned()];
    // Where no user name could be told apart (`amqp:user:pw@host`), the part after the
    // first `:` is the likely password, and may be quoted alone.
    if let Some((_, password)) = found.secret.split_once(':') {
        secrets.push(password.to_owned());
    }
    for secret in secrets.clone() {
        let decoded = percent_decode(&secret);
        if decoded != secret {
            secrets.push(decoded);
        }
    }
    secrets.retain(|s| !s.is_empty());
    secrets
}

/// The passwords of `url` (the credentials after their first `:`), as written and
/// percent-decoded: what [`scrub`] looks for in every line. A user name alone is not
/// remembered: `amqp://bridge@host` must not turn every `bridge` of the logs into `***`.
pub fn url_passwords(url: &str) -> Vec<String> {
    let Some(found) = credentials(url) else {
        return Vec::new();
    };
    let password = if found.kept.contains("://") && found.kept.ends_with(':') {
        // `scheme://user:PASSWORD`: the secret part is the password already.
        Some(found.secret)
    } else {
        found.secret.split_once(':').map(|(_, password)| password)
    };
    let Some(password) = password.filter(|p| !p.is_empty()) else {
        return Vec::new();
    };
    let decoded = percent_decode(password);
    let mut passwords = vec![password.to_owned()];
    if decoded != password {
        passwords.push(decoded);
    }
    passwords
}

/// `text` (an error that may quote `url` or parts of it) with the URL's secret parts
/// replaced by `***`.
pub fn hide_url_secrets(text: &str, url: &str) -> String {
    let mut secrets = url_secrets(url);
    // Longest first, so that a secret holding another is replaced whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut text = text.replace(url, &redact_url(url));
    for secret in secrets {
        text = text.replace(&secret, MASK);
    }
    text
}

/// `%XX` sequences decoded (invalid ones kept as written); bytes that do not form UTF-8
/// are replaced.
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Secrets shorter than this are not searched for in logs: a two-letter password would
/// turn every word holding those letters into `***`. [`Secret`] still never prints them.
pub const MIN_SCRUBBED_BYTES: usize = 4;

/// Every secret value read by this process, longest first.
static REMEMBERED: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Adds `value` to the secrets [`scrub`] hides, also in the escaped forms a log line may
/// show it in (a JSON string, a `Debug` quoting).
pub fn remember(value: &str) {
    if value.len() < MIN_SCRUBBED_BYTES {
        return;
    }
    let json = serde_json::to_string(value).unwrap_or_default();
    let debug = format!("{value:?}");
    let forms = [
        value,
        json.get(1..json.len().saturating_sub(1))
            .unwrap_or_default(),
        debug
            .get(1..debug.len().saturating_sub(1))
            .unwrap_or_default(),
    ];
    let mut known = REMEMBERED.write().unwrap_or_else(|e| e.into_inner());
    for form in forms {
        if form.len() >= MIN_SCRUBBED_BYTES && !known.iter().any(|k| k == form) {
            known.push(form.to_owned());
        }
    }
    known.sort_by_key(|k| std::cmp::Reverse(k.len()));
}

/// `text` with every remembered secret replaced by `***`.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let known = REMEMBERED.read().unwrap_or_else(|e| e.into_inner());
    let mut text = Cow::Borrowed(text);
    for secret in known.iter() {
        if text.contains(secret.as_str()) {
            text = Cow::Owned(text.replace(secret.as_str(), MASK));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let secret = Secret::new("canary-5f3a");
        assert_eq!(format!("{secret:?}"), "<redacted>");
        assert_eq!(secret.expose(), "canary-5f3a");
    }

    #[test]
    fn passwords_with_reserved_characters_are_hidden_whole() {
        for (url, shown) in [
            ("amqp://u:p/ss@h/v", "amqp://u:***@h/v"),
            ("amqp://u:p?ss@h", "amqp://u:***@h"),
            ("amqp://u:p#ss@h", "amqp://u:***@h"),
            ("amqp://u:p@ss@h", "amqp://u:***@h"),
            ("amqp://u:p:ss@h", "amqp://u:***@h"),
            ("amqp://u:p%ss@h", "amqp://u:***@h"),
            ("amqp://u:Pa@ss/word@h/v", "amqp://u:***@h/v"),
            ("amqp://u:p%2Fss@h:5672/%2f", "amqp://u:***@h:5672/%2f"),
            ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
            ("amqps//user:Se/cret@host", "amqps/***@host"),
            ("amqp:user:S3cret@host", "amqp:***@host"),
            ("user:pw@h:9092", "user:***@h:9092"),
            ("kafka://h:9092", "kafka://h:9092"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn a_url_secret_is_found_as_written_and_decoded() {
        assert_eq!(url_secrets("amqp://u:p%2Fss@h"), ["p%2Fss", "p/ss"]);
        assert_eq!(url_secrets("amqp://h/v"), Vec::<String>::new());
        let error = "Invalid URL: 'amqp:u:S3cret@h' (S3cret)";
        assert_eq!(
            hide_url_secrets(error, "amqp:u:S3cret@h"),
            "Invalid URL: 'amqp:***@h' (***)"
        );
    }

    #[test]
    fn a_user_name_alone_is_not_taken_for_a_password() {
        assert_eq!(
            url_passwords("amqp://bridge@rabbit/%2f"),
            Vec::<String>::new()
        );
        assert_eq!(
            url_passwords("amqp://bridge:p%40ss@rabbit"),
            ["p%40ss", "p@ss"]
        );
        assert_eq!(url_passwords("amqp:user:S3cret@host"), ["S3cret"]);
        assert_eq!(url_passwords("redis://:pw-1234@h"), ["pw-1234"]);
    }

    #[test]
    fn a_secret_is_hidden_in_its_escaped_forms_too() {
        let _ = Secret::new("Qx\\9\"quote-canary");
        let json = serde_json::json!({"error": "auth Qx\\9\"quote-canary"}).to_string();
        assert!(!scrub(&json).contains("quote-canary"), "{json}");
        let debug = format!("{:?}", "auth Qx\\9\"quote-canary");
        assert!(!scrub(&debug).contains("quote-canary"), "{debug}");
    }

    #[test]
    fn scrub_hides_every_remembered_secret() {
        let url = SecretUrl::new("amqp://u:Zq9%2Fwx@h");
        let _ = Secret::new("Tk-7781-canary");
        assert_eq!(format!("{url:?}"), "\"amqp://u:***@h\"");
        let line = "auth Zq9/wx and Zq9%2Fwx and Tk-7781-canary, short ab";
        assert_eq!(scrub(line), "auth *** and *** and ***, short ab");
    }
}

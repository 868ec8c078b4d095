//! The one endpoint address form shared by the routes file and the command line:
//! `CONNECTION:PATH`, where `CONNECTION` names a connection of the routes file (or of a
//! `--url` given on the command line) and `PATH` is read by that connection's adapter, e.g.
//! `kafka:orders`, `rabbit:queue/orders`, `rabbit:exchange/events/order.placed`,
//! `aws:sqs/orders-dlq`, `gcp:subscription/orders-sub`. docs/configuration.md lists every
//! adapter's paths.

use std::fmt;
use std::str::FromStr;

/// A parsed `CONNECTION:PATH` address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub connection: String,
    pub path: String,
}

/// Why a text is not an endpoint address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("`{0}` is not an endpoint address: expected CONNECTION:PATH, e.g. kafka:orders")]
    MissingColon(String),
    #[error("`{0}` has an empty connection name before `:`")]
    EmptyConnection(String),
    #[error(
        "connection name `{0}` may only hold letters, digits, `_` and `-` (did you mean a routes-file connection name?)"
    )]
    BadConnection(String),
    #[error("`{0}` has nothing after `:`; give the queue, topic or other path")]
    EmptyPath(String),
}

/// True when `name` is a valid connection name.
pub fn is_connection_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl FromStr for Endpoint {
    type Err = AddressError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (connection, path) = text
            .split_once(':')
            .ok_or_else(|| AddressError::MissingColon(text.to_owned()))?;
        if connection.is_empty() {
            return Err(AddressError::EmptyConnection(text.to_owned()));
        }
        if !is_connection_name(connection) {
            return Err(AddressError::BadConnection(connection.to_owned()));
        }
        if path.is_empty() {
            return Err(AddressError::EmptyPath(text.to_owned()));
        }
        Ok(Endpoint {
            connection: connection.to_owned(),
            path: path.to_owned(),
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.connection, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_the_first_colon_only() {
        let endpoint: Endpoint = "rabbit:exchange/events/a:b".parse().unwrap();
        assert_eq!(endpoint.connection, "rabbit");
        assert_eq!(endpoint.path, "exchange/events/a:b");
        assert_eq!(endpoint.to_string(), "rabbit:exchange/events/a:b");
    }

    #[test]
    fn refuses_addresses_without_connection_or_path() {
        assert!(matches!(
            "orders".parse::<Endpoint>(),
            Err(AddressError::MissingColon(_))
        ));
        assert!(matches!(
            ":orders".parse::<Endpoint>(),
            Err(AddressError::EmptyConnection(_))
        ));
        assert!(matches!(
            "kafka:".parse::<Endpoint>(),
            Err(AddressError::EmptyPath(_))
        ));
        assert!(matches!(
            "a b:c".parse::<Endpoint>(),
            Err(AddressError::BadConnection(_))
        ));
    }
}

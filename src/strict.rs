//! Strict reading of configuration values: a JSON value as a serde deserializer that
//! refuses a list where a mapping of fields is expected. Shared by the routes file's
//! sections (`config`) and each adapter's connection and source options (`adapter`).
//!
//! serde's derived structs also accept their fields as a list, by position, so
//! `retry: [1, 2]` would be read as `max_attempts: 1, initial_backoff: 2` and reported
//! as a unit error at `retry[1]`. Read through [`Strict`], the same file gets "invalid
//! type: a list, expected a mapping" at `retry`. Everything else is read as serde_json
//! reads it.

use serde::de::value::{MapDeserializer, SeqDeserializer};
use serde::de::{self, Deserializer, IntoDeserializer, Unexpected, Visitor};
use serde_json::Value;

pub struct Strict(pub Value);

/// Deserializes `value` strictly (a list is never read as a mapping's fields), reporting
/// the path of the first problem inside it.
pub fn parse_strict<T: serde::de::DeserializeOwned>(
    value: Value,
) -> Result<T, serde_path_to_error::Error<serde_json::Error>> {
    serde_path_to_error::deserialize(Strict(value))
}

impl<'de> IntoDeserializer<'de, serde_json::Error> for Strict {
    type Deserializer = Strict;

    fn into_deserializer(self) -> Strict {
        self
    }
}

impl<'de> Deserializer<'de> for Strict {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Array(items) => {
                let mut items = SeqDeserializer::new(items.into_iter().map(Strict));
                let value = visitor.visit_seq(&mut items)?;
                items.end()?;
                Ok(value)
            }
            Value::Object(fields) => {
                let mut fields =
                    MapDeserializer::new(fields.into_iter().map(|(name, v)| (name, Strict(v))));
                let value = visitor.visit_map(&mut fields)?;
                fields.end()?;
                Ok(value)
            }
            scalar => scalar.deserialize_any(visitor),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        if matches!(self.0, Value::Array(_)) {
            return Err(de::Error::invalid_type(Unexpected::Seq, &"a mapping"));
        }
        self.deserialize_any(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_enum(name, variants, visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::Strict;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Retry {
        attempts: u32,
        backoff: Option<String>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Route {
        name: String,
        retry: Option<Retry>,
        to: Vec<String>,
    }

    fn parse(value: serde_json::Value) -> Result<Route, String> {
        serde_path_to_error::deserialize(Strict(value)).map_err(|e| format!("{e}"))
    }

    #[test]
    fn mappings_lists_and_scalars_read_as_usual() {
        let route = parse(json!({"name": "r", "retry": {"attempts": 3}, "to": ["a", "b"]}));
        assert_eq!(
            route,
            Ok(Route {
                name: "r".into(),
                retry: Some(Retry {
                    attempts: 3,
                    backoff: None
                }),
                to: vec!["a".into(), "b".into()],
            })
        );
        assert!(parse(json!({"name": "r", "retry": null, "to": []})).is_ok());
    }

    #[test]
    fn a_list_where_fields_are_expected_is_refused_at_its_path() {
        let error = parse(json!({"name": "r", "retry": [1, "2s"], "to": []})).unwrap_err();
        assert_eq!(error, "retry: invalid type: sequence, expected a mapping");
        let error = parse(json!(["r", null, []])).unwrap_err();
        assert!(error.contains("expected a mapping"), "{error}");
    }
}

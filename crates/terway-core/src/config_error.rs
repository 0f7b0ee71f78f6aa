//! The configuration error type and the helper that turns a serde failure into a message naming the
//! offending key, e.g. `eni_conf.max_pool_size: invalid type: string "5", expected u32`.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// A configuration that cannot be used, with the dotted key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The text is not JSON at all.
    #[error("{what} is not valid JSON: {reason}")]
    Json {
        /// Which document (e.g. `eni_conf`).
        what: &'static str,
        /// The parser's explanation, with line and column.
        reason: String,
    },
    /// The JSON is not an object.
    #[error("{what} must be a JSON object, got {got}")]
    NotObject {
        /// Which document.
        what: &'static str,
        /// The JSON kind found instead.
        got: &'static str,
    },
    /// One key has a bad value.
    #[error("{key}: {message}")]
    Invalid {
        /// Dotted path such as `eni_conf.vswitch_selection_policy`.
        key: String,
        /// What is wrong and what is accepted.
        message: String,
    },
}

impl ConfigError {
    /// A bad value at `key` (already prefixed with the document name).
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The JSON kind of a value, for messages.
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parse text into a JSON object.
pub fn parse_object_text(
    what: &'static str,
    text: &str,
) -> Result<Map<String, Value>, ConfigError> {
    let v: Value = serde_json::from_str(text).map_err(|e| ConfigError::Json {
        what,
        reason: e.to_string(),
    })?;
    into_object(what, v)
}

/// Require a JSON object.
pub fn into_object(what: &'static str, v: Value) -> Result<Map<String, Value>, ConfigError> {
    match v {
        Value::Object(m) => Ok(m),
        other => Err(ConfigError::NotObject {
            what,
            got: json_kind(&other),
        }),
    }
}

/// Deserialize an object into `T`; on failure find the first key whose value alone fails, so the
/// error names it. `T` must accept an object with any subset of its keys (`#[serde(default)]`).
pub fn deserialize_naming_key<T: DeserializeOwned>(
    what: &'static str,
    obj: Map<String, Value>,
) -> Result<T, ConfigError> {
    match serde_json::from_value::<T>(Value::Object(obj.clone())) {
        Ok(t) => Ok(t),
        Err(whole) => {
            for (key, value) in obj {
                let single = Map::from_iter([(key.clone(), value)]);
                if let Err(e) = serde_json::from_value::<T>(Value::Object(single)) {
                    return Err(ConfigError::invalid(format!("{what}.{key}"), e.to_string()));
                }
            }
            Err(ConfigError::invalid(what, whole.to_string()))
        }
    }
}

/// Generates a string enum whose serde error names the key and the accepted spellings, so that
/// `"foo"` for `vswitch_selection_policy` reads `"foo" is not one of random|ordered|most`.
macro_rules! config_enum {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal $(| $alias:literal)* ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// The accepted spellings, `|`-separated, for messages.
            pub const CHOICES: &'static str = concat!($( $text, "|" ),+);

            /// The canonical spelling.
            pub fn as_str(self) -> &'static str {
                match self { $( Self::$variant => $text ),+ }
            }

            /// Parse a spelling (canonical or legacy alias).
            pub fn parse(s: &str) -> Result<Self, String> {
                match s {
                    $( $text $(| $alias)* => Ok(Self::$variant), )+
                    other => Err(format!(
                        "{:?} is not one of {}",
                        other,
                        Self::CHOICES.trim_end_matches('|')
                    )),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

pub(crate) use config_enum;

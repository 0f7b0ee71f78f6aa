//! Request parameters of an RPC-style call: the merged query string and form body, with the typed
//! accessors the actions need (`Name.N` lists, `Tag.N.Key`/`Tag.N.Value`, integers, booleans).

use std::collections::BTreeMap;
use std::str::FromStr;

use crate::error::ApiError;

/// Parameters by name (the last occurrence wins, as in the real gateway).
#[derive(Debug, Clone, Default)]
pub struct Params {
    map: BTreeMap<String, String>,
}

/// Parameters that belong to the protocol, not to the action: excluded from idempotency
/// fingerprints and call summaries.
const PROTOCOL_PARAMS: &[&str] = &[
    "Action",
    "Version",
    "Signature",
    "SignatureMethod",
    "SignatureNonce",
    "SignatureVersion",
    "SignatureType",
    "Timestamp",
    "AccessKeyId",
    "SecurityToken",
    "Format",
    "ClientToken",
];

impl Params {
    /// From decoded pairs.
    pub fn from_pairs(pairs: &[(String, String)]) -> Self {
        Self {
            map: pairs.iter().cloned().collect(),
        }
    }

    /// A raw value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.map
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A required value.
    pub fn require(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name).ok_or_else(|| ApiError::missing(name))
    }

    /// Parse a value.
    pub fn parse<T: FromStr>(&self, name: &str) -> Result<Option<T>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| ApiError::invalid(name, format!("{v:?} is malformed"))),
        }
    }

    /// A boolean (`true`/`false` in any case, as the SDKs send `True`).
    pub fn boolean(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(v) => Err(ApiError::invalid(name, format!("{v:?} is not a boolean"))),
        }
    }

    /// `Name.1`, `Name.2`, … in index order; a `Name` holding a JSON array (the style some APIs use,
    /// e.g. DescribeInstances' `InstanceIds`) is accepted too.
    pub fn list(&self, name: &str) -> Result<Vec<String>, ApiError> {
        let mut indexed: Vec<(u32, String)> = Vec::new();
        let prefix = format!("{name}.");
        for (k, v) in &self.map {
            if let Some(idx) = k.strip_prefix(&prefix) {
                if let Ok(n) = idx.parse::<u32>() {
                    if !v.is_empty() {
                        indexed.push((n, v.clone()));
                    }
                }
            }
        }
        indexed.sort_by_key(|(n, _)| *n);
        let mut out: Vec<String> = indexed.into_iter().map(|(_, v)| v).collect();
        if let Some(raw) = self.get(name) {
            if raw.trim_start().starts_with('[') {
                let parsed: Vec<String> = serde_json::from_str(raw).map_err(|e| {
                    ApiError::invalid(name, format!("not a JSON string array ({e})"))
                })?;
                out.extend(parsed);
            } else {
                out.push(raw.to_string());
            }
        }
        Ok(out)
    }

    /// `Tag.N.Key` / `Tag.N.Value` pairs.
    pub fn tags(&self) -> Result<BTreeMap<String, String>, ApiError> {
        let mut by_index: BTreeMap<u32, (Option<String>, Option<String>)> = BTreeMap::new();
        for (k, v) in &self.map {
            let Some(rest) = k.strip_prefix("Tag.") else {
                continue;
            };
            let Some((idx, field)) = rest.split_once('.') else {
                continue;
            };
            let Ok(n) = idx.parse::<u32>() else { continue };
            let entry = by_index.entry(n).or_default();
            match field {
                "Key" => entry.0 = Some(v.clone()),
                "Value" => entry.1 = Some(v.clone()),
                _ => {}
            }
        }
        let mut tags = BTreeMap::new();
        for (n, (key, value)) in by_index {
            let key = key
                .filter(|k| !k.is_empty())
                .ok_or_else(|| ApiError::missing(&format!("Tag.{n}.Key")))?;
            tags.insert(key, value.unwrap_or_default());
        }
        if tags.len() > 20 {
            return Err(ApiError::invalid("Tag", "at most 20 tags are allowed"));
        }
        Ok(tags)
    }

    /// Business parameters (protocol ones removed), for idempotency fingerprints and call logs.
    pub fn business(&self) -> BTreeMap<String, String> {
        self.map
            .iter()
            .filter(|(k, _)| !PROTOCOL_PARAMS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Params {
        let v: Vec<(String, String)> = pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        Params::from_pairs(&v)
    }

    #[test]
    fn lists_are_ordered_by_index_not_text() {
        let params = p(&[("Id.10", "j"), ("Id.2", "b"), ("Id.1", "a")]);
        assert_eq!(params.list("Id").unwrap(), vec!["a", "b", "j"]);
    }

    #[test]
    fn json_list_is_accepted() {
        let params = p(&[("InstanceIds", r#"["i-1","i-2"]"#)]);
        assert_eq!(params.list("InstanceIds").unwrap(), vec!["i-1", "i-2"]);
    }

    #[test]
    fn tags_pair_keys_and_values() {
        let params = p(&[
            ("Tag.1.Key", "creator"),
            ("Tag.1.Value", "terway"),
            ("Tag.2.Key", "k"),
        ]);
        let tags = params.tags().unwrap();
        assert_eq!(tags.get("creator").map(String::as_str), Some("terway"));
        assert_eq!(tags.get("k").map(String::as_str), Some(""));
        let bad = p(&[("Tag.1.Value", "v")]);
        assert_eq!(bad.tags().unwrap_err().code, "MissingParameter");
    }

    #[test]
    fn booleans_accept_python_spelling() {
        let params = p(&[("A", "True"), ("B", "false"), ("C", "yes")]);
        assert_eq!(params.boolean("A").unwrap(), Some(true));
        assert_eq!(params.boolean("B").unwrap(), Some(false));
        assert!(params.boolean("C").is_err());
    }
}

//! Which ENIs a node may manage, by their tags: ours (`creator=terway`), matching `eni_tag_filter`, and
//! not on the block list. The daemon applies this before adopting or deleting an ENI it did not record.

use std::collections::BTreeMap;

/// The tag every ENI we create carries.
pub const CREATOR_TAG: (&str, &str) = ("creator", "terway");

/// ENIs carrying any of these tags belong to someone else whatever the configuration says (Terway's
/// defaults: the ERDMA controller's ENIs and ENIs an operator excluded by hand).
pub const DEFAULT_ENI_TAG_BLOCK_LIST: &[(&str, &str)] = &[
    ("creator", "alibabacloud-erdma-controller"),
    ("terway.alibabacloud.com/excluded", "true"),
];

/// Which existing ENIs a node manages: ours (`creator=terway`), carrying every `filter` pair and none
/// of the `block` pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EniTagPolicy {
    /// Tags an ENI must carry.
    pub filter: BTreeMap<String, String>,
    /// Tags that rule an ENI out.
    pub block: Vec<(String, String)>,
}

impl EniTagPolicy {
    /// The first blocked `key=value` among `tags`, if any.
    pub fn blocked_pair<'a>(
        &'a self,
        tags: &BTreeMap<String, String>,
    ) -> Option<(&'a str, &'a str)> {
        self.block
            .iter()
            .find(|(k, v)| tags.get(k) == Some(v))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Why an ENI with these tags is not ours to manage, or `None` when it is.
    pub fn refusal(&self, tags: &BTreeMap<String, String>) -> Option<String> {
        if tags.get(CREATOR_TAG.0).map(String::as_str) != Some(CREATOR_TAG.1) {
            return Some(format!("not tagged {}={}", CREATOR_TAG.0, CREATOR_TAG.1));
        }
        if let Some((k, v)) = self.filter.iter().find(|(k, v)| tags.get(*k) != Some(*v)) {
            return Some(format!("lacks eni_tag_filter tag {k}={v}"));
        }
        self.blocked_pair(tags)
            .map(|(k, v)| format!("carries blocked tag {k}={v}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn ours_filtered_and_not_blocked() {
        let p = EniTagPolicy {
            filter: tags(&[("env", "prod")]),
            block: vec![("keep".into(), "out".into())],
        };
        assert_eq!(
            p.refusal(&tags(&[("creator", "terway"), ("env", "prod")])),
            None
        );
        let why = p.refusal(&tags(&[("env", "prod")])).unwrap();
        assert!(why.contains("creator=terway"), "{why}");
        let why = p
            .refusal(&tags(&[("creator", "terway"), ("env", "dev")]))
            .unwrap();
        assert!(why.contains("eni_tag_filter tag env=prod"), "{why}");
        let why = p
            .refusal(&tags(&[
                ("creator", "terway"),
                ("env", "prod"),
                ("keep", "out"),
            ]))
            .unwrap();
        assert!(why.contains("blocked tag keep=out"), "{why}");
        // Another value of a blocked key is not blocked.
        assert_eq!(
            p.refusal(&tags(&[
                ("creator", "terway"),
                ("env", "prod"),
                ("keep", "in")
            ])),
            None
        );
    }

    #[test]
    fn empty_policy_manages_every_eni_of_ours() {
        let p = EniTagPolicy::default();
        assert_eq!(p.refusal(&tags(&[("creator", "terway")])), None);
        assert!(p.refusal(&tags(&[("creator", "someone")])).is_some());
    }
}

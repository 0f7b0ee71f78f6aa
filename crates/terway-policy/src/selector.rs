//! Label selectors as the compiler uses them: parsed once into requirements, invalid ones refused. (The
//! oracle reads the API's `LabelSelector` directly instead; see the crate docs.)

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// One requirement on a label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// The label is one of the values.
    In(String, BTreeSet<String>),
    /// The label is absent or none of the values.
    NotIn(String, BTreeSet<String>),
    /// The label is present.
    Exists(String),
    /// The label is absent.
    DoesNotExist(String),
}

/// A parsed selector: every requirement must hold; no requirement selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    reqs: Vec<Requirement>,
}

impl Selector {
    /// Parse `sel`; the error says which requirement is invalid.
    pub fn parse(sel: &LabelSelector) -> Result<Selector, String> {
        let mut reqs = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            reqs.push(Requirement::In(k.clone(), BTreeSet::from([v.clone()])));
        }
        for e in sel.match_expressions.iter().flatten() {
            let values: BTreeSet<String> = e.values.iter().flatten().cloned().collect();
            let r = match e.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(format!(
                        "selector requirement on {:?} with operator {} has no values",
                        e.key, e.operator
                    ))
                }
                "In" => Requirement::In(e.key.clone(), values),
                "NotIn" => Requirement::NotIn(e.key.clone(), values),
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(format!(
                        "selector requirement on {:?} with operator {} must have no values",
                        e.key, e.operator
                    ))
                }
                "Exists" => Requirement::Exists(e.key.clone()),
                "DoesNotExist" => Requirement::DoesNotExist(e.key.clone()),
                other => {
                    return Err(format!(
                        "selector requirement on {:?} has unknown operator {other:?} (In, NotIn, Exists, DoesNotExist)",
                        e.key
                    ))
                }
            };
            reqs.push(r);
        }
        Ok(Selector { reqs })
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.reqs.iter().all(|r| match r {
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }

    /// Whether it selects everything (no requirement).
    pub fn is_everything(&self) -> bool {
        self.reqs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelector {
        LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: key.into(),
                operator: op.into(),
                values: (!values.is_empty())
                    .then(|| values.iter().map(|v| v.to_string()).collect()),
            }]),
            match_labels: None,
        }
    }

    #[test]
    fn operators_follow_the_api() {
        let ab = labels(&[("app", "a"), ("tier", "web")]);
        let none = labels(&[]);
        let s = |sel: LabelSelector| Selector::parse(&sel).unwrap();
        assert!(s(LabelSelector::default()).matches(&none));
        assert!(s(expr("app", "In", &["a", "b"])).matches(&ab));
        assert!(!s(expr("app", "In", &["b"])).matches(&ab));
        assert!(s(expr("app", "NotIn", &["b"])).matches(&ab));
        assert!(
            s(expr("app", "NotIn", &["b"])).matches(&none),
            "absent is not in"
        );
        assert!(s(expr("tier", "Exists", &[])).matches(&ab));
        assert!(s(expr("tier", "DoesNotExist", &[])).matches(&none));
        assert!(!s(expr("tier", "DoesNotExist", &[])).matches(&ab));
        let both = LabelSelector {
            match_labels: Some(BTreeMap::from([("app".into(), "a".into())])),
            ..expr("tier", "In", &["db"])
        };
        assert!(!s(both).matches(&ab), "all requirements must hold");
    }

    #[test]
    fn invalid_requirements_are_refused_with_the_key() {
        for (op, vals) in [
            ("In", vec![]),
            ("NotIn", vec![]),
            ("Exists", vec!["x"]),
            ("Near", vec!["x"]),
        ] {
            let e = Selector::parse(&expr("app", op, &vals)).unwrap_err();
            assert!(e.contains("\"app\""), "{e}");
        }
    }
}

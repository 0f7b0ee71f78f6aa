//! The first half of the main suite: default deny, selectors of every shape, ports, named ports, updates.

use super::kit::*;
use super::{Scenario, Suite};
use crate::model::World;

pub(super) fn push(m: &World, out: &mut Vec<Scenario>) {
    let t = |it, pods| Test {
        model: m,
        suite: Suite::Tcp,
        it,
        pods,
    };

    out.push(
        t(
            "should support a 'default-deny-ingress' policy",
            &["x/a", "x/b", "y/a", "y/b"],
        )
        .once(
            &[TCP_80],
            vec![policy(
                "x",
                "deny-ingress",
                everything(),
                Some(vec![]),
                None,
            )],
        ),
    );

    out.push(
        t(
            "should support a 'default-deny-all' policy",
            &["x/a", "x/b", "y/a"],
        )
        .once(
            &[TCP_80],
            vec![policy(
                "x",
                "deny-all",
                everything(),
                Some(vec![]),
                Some(vec![]),
            )],
        ),
    );

    out.push(
        t(
            "should enforce policy to allow traffic from pods within server namespace based on PodSelector",
            &["x/a", "x/b", "x/c", "y/a"],
        )
        .once(
            &[TCP_80],
            vec![policy(
                "x",
                "a-from-b",
                labels(&[("pod", "a")]),
                Some(vec![from(vec![pods(labels(&[("pod", "b")]))], vec![])]),
                None,
            )],
        ),
    );

    // Both policies exist before upstream checks anything, so this is one step.
    out.push(
        t(
            "should enforce policy to allow ingress traffic for a target",
            &["x/a", "x/b", "y/a"],
        )
        .once(
            &[TCP_80],
            vec![
                policy("x", "deny-all", everything(), Some(vec![]), None),
                policy(
                    "x",
                    "open-a",
                    labels(&[("pod", "a")]),
                    Some(vec![from(
                        vec![pods_in(everything(), everything())],
                        vec![],
                    )]),
                    None,
                ),
            ],
        ),
    );

    out.push(
        t(
            "should enforce policy to allow ingress traffic from pods in all namespaces",
            &["x/a", "x/b", "y/a", "z/a"],
        )
        .once(
            &[TCP_80],
            vec![policy(
                "x",
                "a-from-any-namespace",
                labels(&[("pod", "a")]),
                Some(vec![from(vec![namespaces(labels(&[]))], vec![])]),
                None,
            )],
        ),
    );

    let from_y = |name: &str, sel| {
        policy(
            "x",
            name,
            labels(&[("pod", "a")]),
            Some(vec![from(vec![namespaces(sel)], vec![])]),
            None,
        )
    };
    out.push(
        t(
            "should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector",
            &["x/a", "x/b", "y/a", "z/a"],
        )
        .once(&[TCP_80], vec![from_y("a-from-y", ns_named("y"))]),
    );

    out.push(
        t(
            "should enforce policy based on PodSelector with MatchExpressions",
            &["x/a", "x/b", "y/a"],
        )
        .once(
            &[TCP_80],
            vec![policy(
                "x",
                "a-from-b-by-expression",
                labels(&[("pod", "a")]),
                Some(vec![from(vec![pods(expr("pod", "In", &["b"]))], vec![])]),
                None,
            )],
        ),
    );

    out.push(
        t(
            "should enforce policy based on NamespaceSelector with MatchExpressions",
            &["x/a", "x/b", "y/a", "z/a"],
        )
        .once(
            &[TCP_80],
            vec![from_y(
                "a-from-y-by-expression",
                expr(NAME_LABEL, "In", &["y"]),
            )],
        ),
    );

    // Two peers in one rule: either admits.
    out.push(
        t(
            "should enforce policy based on PodSelector or NamespaceSelector",
            &["x/a", "x/b", "x/c", "y/a"],
        )
        .once(
            &[TCP_80],
            vec![policy(
                "x",
                "a-from-elsewhere-or-b",
                labels(&[("pod", "a")]),
                Some(vec![from(
                    vec![
                        namespaces(expr(NAME_LABEL, "NotIn", &["x"])),
                        pods(labels(&[("pod", "b")])),
                    ],
                    vec![],
                )]),
                None,
            )],
        ),
    );

    // Both selectors in one peer: a pod must pass both.
    out.push(
        t(
            "should enforce policy based on PodSelector and NamespaceSelector",
            &["x/a", "x/b", "y/a", "y/b", "z/b"],
        )
        .once(
            &[TCP_80],
            vec![policy(
                "x",
                "a-from-b-elsewhere",
                labels(&[("pod", "a")]),
                Some(vec![from(
                    vec![pods_in(
                        expr(NAME_LABEL, "NotIn", &["x"]),
                        labels(&[("pod", "b")]),
                    )],
                    vec![],
                )]),
                None,
            )],
        ),
    );

    out.push(
        t(
            "should enforce policy based on Multiple PodSelectors and NamespaceSelectors",
            &["x/a", "x/b", "y/a", "y/b", "y/c"],
        )
        .once(
            &[TCP_80],
            vec![policy(
                "x",
                "a-from-b-or-c-elsewhere",
                labels(&[("pod", "a")]),
                Some(vec![from(
                    vec![pods_in(
                        expr(NAME_LABEL, "NotIn", &["x"]),
                        expr("pod", "In", &["b", "c"]),
                    )],
                    vec![],
                )]),
                None,
            )],
        ),
    );

    out.push(
        t(
            "should enforce policy based on any PodSelectors",
            &["x/a", "x/b", "x/c"],
        )
        .once(
            &[TCP_80],
            vec![policy(
                "x",
                "a-from-b-or-c",
                labels(&[("pod", "a")]),
                Some(vec![from(
                    vec![pods(labels(&[("pod", "b")])), pods(labels(&[("pod", "c")]))],
                    vec![],
                )]),
                None,
            )],
        ),
    );

    out.push(
        t(
            "should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector",
            &["x/a", "x/b", "y/a", "y/b", "z/a"],
        )
        .once(
            &[TCP_80],
            vec![policy(
                "x",
                "a-from-y-a",
                labels(&[("pod", "a")]),
                Some(vec![from(vec![pods_in(ns_named("y"), labels(&[("pod", "a")]))], vec![])]),
                None,
            )],
        ),
    );

    let y_on = |name: &str, n: i32| {
        policy(
            "x",
            name,
            labels(&[("pod", "a")]),
            Some(vec![from(
                vec![namespaces(ns_named("y"))],
                vec![port(n, Some("TCP"))],
            )]),
            None,
        )
    };
    out.push(
        t(
            "should enforce policy based on Ports",
            &["x/a", "x/b", "y/a", "y/b", "z/a"],
        )
        .once(&[TCP_81], vec![y_on("a-from-y-on-81", 81)]),
    );

    let stacked = t(
        "should enforce multiple, stacked policies with overlapping podSelectors",
        &["x/a", "x/b", "y/a", "y/b", "z/a"],
    );
    out.push(stacked.step(
        1,
        "y may reach x/a on 81 only",
        &[TCP_81, TCP_80],
        vec![y_on("a-from-y-on-81", 81)],
    ));
    out.push(stacked.step(
        2,
        "a second policy on the same pods opens 80 too",
        &[TCP_80],
        vec![y_on("a-from-y-on-81", 81), y_on("a-from-y-on-80", 80)],
    ));

    out.push(
        t("should support allow-all policy", &["x/a", "x/b", "y/a"]).once(
            &[TCP_80, TCP_81],
            vec![policy(
                "x",
                "allow-all",
                labels(&[]),
                Some(vec![from(vec![], vec![])]),
                None,
            )],
        ),
    );

    // No protocol on the port: the API reads TCP, which is also the named port's protocol.
    out.push(
        t(
            "should allow ingress access on one named port",
            &["x/a", "x/b", "y/a"],
        )
        .once(
            &[TCP_81, TCP_80],
            vec![policy(
                "x",
                "only-serve-81-tcp",
                labels(&[]),
                Some(vec![from(vec![], vec![named("serve-81-tcp", None)])]),
                None,
            )],
        ),
    );

    out.push(
        t(
            "should allow ingress access from namespace on one named port",
            &["x/a", "x/b", "y/a", "z/a"],
        )
        .once(
            &[TCP_80, TCP_81],
            vec![policy(
                "x",
                "a-from-y-on-serve-80-tcp",
                labels(&[("pod", "a")]),
                Some(vec![from(
                    vec![namespaces(ns_named("y"))],
                    vec![named("serve-80-tcp", Some("TCP"))],
                )]),
                None,
            )],
        ),
    );

    // An egress named port resolves against the destination pod's container ports.
    out.push(
        t(
            "should allow egress access on one named port",
            &["x/a", "y/a"],
        )
        .once(
            &[TCP_80, TCP_81],
            vec![policy(
                "x",
                "out-only-serve-80-tcp",
                labels(&[]),
                None,
                Some(vec![to(vec![], vec![named("serve-80-tcp", None)])]),
            )],
        ),
    );

    let updated = t("should enforce updated policy", &["x/a", "y/a"]);
    out.push(updated.step(
        1,
        "the policy admits everything",
        &[TCP_81],
        vec![policy(
            "x",
            "mutating",
            labels(&[]),
            Some(vec![from(vec![], vec![])]),
            None,
        )],
    ));
    out.push(updated.step(
        2,
        "the same policy updated to an empty rule list",
        &[TCP_81],
        vec![policy("x", "mutating", labels(&[]), Some(vec![]), None)],
    ));

    let ns_policy = || {
        vec![policy(
            "x",
            "a-from-ns2-updated",
            labels(&[("pod", "a")]),
            Some(vec![from(
                vec![namespaces(labels(&[("ns2", "updated")]))],
                vec![],
            )]),
            None,
        )]
    };
    let ns_updated = t(
        "should allow ingress access from updated namespace",
        &["x/a", "y/a"],
    );
    out.push(ns_updated.step(1, "no namespace has ns2=updated", &[TCP_80], ns_policy()));
    let mut relabelled = ns_updated.step(
        2,
        "namespace y labelled ns2=updated",
        &[TCP_80],
        ns_policy(),
    );
    label_namespace(&mut relabelled.world, "y", "ns2", "updated");
    out.push(relabelled);
}

//! The second half of the main suite: relabelled pods, egress, several policies at once, deletion,
//! address blocks, and the protocol tests (a policy naming SCTP or UDP must not admit TCP).

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

    let pod_policy = || {
        vec![policy(
            "x",
            "a-from-pod2-updated",
            labels(&[("pod", "a")]),
            Some(vec![from(
                vec![pods(labels(&[("pod", "b"), ("pod2", "updated")]))],
                vec![],
            )]),
            None,
        )]
    };
    let pod_updated = t(
        "should allow ingress access from updated pod",
        &["x/a", "x/b"],
    );
    out.push(pod_updated.step(1, "x/b lacks pod2=updated", &[TCP_80], pod_policy()));
    let mut relabelled = pod_updated.step(2, "x/b labelled pod2=updated", &[TCP_80], pod_policy());
    label_pod(&mut relabelled.world, "x", "b", "pod2", "updated");
    out.push(relabelled);

    // A peer with an empty pod selector and no namespace selector: every pod of x, and only of x.
    out.push(
        t(
            "should deny ingress from pods on other namespaces",
            &["x/a", "x/b", "y/a", "z/a"],
        )
        .once(
            &[TCP_80],
            vec![policy(
                "x",
                "only-from-x",
                everything(),
                Some(vec![from(vec![pods(labels(&[]))], vec![])]),
                None,
            )],
        ),
    );

    let isolate = || {
        vec![policy(
            "x",
            "deny-isolated",
            labels(&[("target", "isolated")]),
            Some(vec![]),
            None,
        )]
    };
    let to_updated = t("should deny ingress access to updated pod", &["x/a", "y/a"]);
    out.push(to_updated.step(1, "no pod has target=isolated", &[TCP_80], isolate()));
    let mut relabelled = to_updated.step(2, "x/a labelled target=isolated", &[TCP_80], isolate());
    label_pod(&mut relabelled.world, "x", "a", "target", "isolated");
    out.push(relabelled);

    out.push(
        t(
            "should deny egress from pods based on PodSelector",
            &["x/a", "x/b", "y/a"],
        )
        .once(
            &[TCP_80],
            vec![policy(
                "x",
                "deny-out-of-a",
                labels(&[("pod", "a")]),
                None,
                Some(vec![]),
            )],
        ),
    );

    out.push(
        t(
            "should deny egress from all pods in a namespace",
            &["x/a", "x/b", "y/a"],
        )
        .once(
            &[TCP_80],
            vec![policy(
                "x",
                "deny-out-of-x",
                everything(),
                None,
                Some(vec![]),
            )],
        ),
    );

    out.push(
        t(
            "should work with Ingress, Egress specified together",
            &["x/a", "x/b", "x/c", "y/a"],
        )
        .once(
            &[TCP_80, TCP_81],
            vec![policy(
                "x",
                "a-from-b-out-on-80",
                labels(&[("pod", "a")]),
                Some(vec![from(vec![pods(labels(&[("pod", "b")]))], vec![])]),
                Some(vec![to(vec![], vec![port(80, None)])]),
            )],
        ),
    );

    // The servers admit x/a; the client's own egress policy still stops it reaching y/b.
    let from_x_a = || {
        vec![from(
            vec![pods_in(ns_named("x"), labels(&[("pod", "a")]))],
            vec![],
        )]
    };
    let out_to_y_a = || {
        policy(
            "x",
            "a-out-to-y-a",
            labels(&[("pod", "a")]),
            None,
            Some(vec![to(
                vec![pods_in(ns_named("y"), labels(&[("pod", "a")]))],
                vec![],
            )]),
        )
    };
    out.push(
        t(
            "should support denying of egress traffic on the client side (even if the server explicitly allows this traffic)",
            &["x/a", "y/a", "y/b"],
        )
        .once(
            &[TCP_80],
            vec![
                out_to_y_a(),
                policy("y", "a-from-x-a", labels(&[("pod", "a")]), Some(from_x_a()), None),
                policy("y", "b-from-x-a", labels(&[("pod", "b")]), Some(from_x_a()), None),
            ],
        ),
    );

    out.push(
        t(
            "should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector",
            &["x/a", "y/a", "y/b"],
        )
        .once(&[TCP_80], vec![out_to_y_a()]),
    );

    out.push(
        t(
            "should enforce ingress policy allowing any port traffic to a server on a specific protocol",
            &["x/a", "y/a"],
        )
        .once(
            &[TCP_80, UDP_80],
            vec![policy(
                "x",
                "a-tcp-only",
                labels(&[("pod", "a")]),
                Some(vec![from(vec![], vec![any_port("TCP")])]),
                None,
            )],
        ),
    );

    let in_80 = || {
        policy(
            "x",
            "in-on-80",
            labels(&[]),
            Some(vec![from(vec![], vec![port(80, None)])]),
            None,
        )
    };
    let in_all = || {
        policy(
            "x",
            "in-all",
            labels(&[]),
            Some(vec![from(vec![], vec![])]),
            None,
        )
    };
    let ingress_union = t(
        "should enforce multiple ingress policies with ingress allow-all policy taking precedence",
        &["x/a", "y/a"],
    );
    out.push(ingress_union.step(1, "x admits 80 only", &[TCP_81], vec![in_80()]));
    out.push(ingress_union.step(
        2,
        "an allow-all ingress policy added",
        &[TCP_81],
        vec![in_80(), in_all()],
    ));

    let out_80 = || {
        policy(
            "x",
            "out-on-80",
            labels(&[]),
            None,
            Some(vec![to(vec![], vec![port(80, None)])]),
        )
    };
    let out_all = || {
        policy(
            "x",
            "out-all",
            labels(&[]),
            None,
            Some(vec![to(vec![], vec![])]),
        )
    };
    let egress_union = t(
        "should enforce multiple egress policies with egress allow-all policy taking precedence",
        &["x/a", "y/a"],
    );
    out.push(egress_union.step(1, "x may send to 80 only", &[TCP_81], vec![out_80()]));
    out.push(egress_union.step(
        2,
        "an allow-all egress policy added",
        &[TCP_81],
        vec![out_80(), out_all()],
    ));

    let deleted = t(
        "should stop enforcing policies after they are deleted",
        &["x/a", "y/a"],
    );
    out.push(deleted.step(
        1,
        "x denies all in and out",
        &[TCP_80],
        vec![policy(
            "x",
            "deny-all",
            everything(),
            Some(vec![]),
            Some(vec![]),
        )],
    ));
    out.push(deleted.step(2, "every policy deleted", &[TCP_80], vec![]));

    if let Some(y_b) = host_block(m, "y", "b") {
        out.push(
            t(
                "should allow egress access to server in CIDR block",
                &["x/a", "y/a", "y/b"],
            )
            .once(
                &[TCP_80],
                vec![policy(
                    "x",
                    "a-out-to-y-b-address",
                    labels(&[("pod", "a")]),
                    None,
                    Some(vec![to(vec![block(y_b, vec![])], vec![])]),
                )],
            ),
        );
    }

    if let (Some(wide), Some(x_b)) = (wide_block(m, "x", "b"), host_block(m, "x", "b")) {
        let around_b = || {
            policy(
                "x",
                "a-out-around-b",
                labels(&[("pod", "a")]),
                None,
                Some(vec![to(
                    vec![block(wide.clone(), vec![x_b.clone()])],
                    vec![],
                )]),
            )
        };
        out.push(
            t(
                "should enforce except clause while egress access to server in CIDR block",
                &["x/a", "x/b", "x/c"],
            )
            .once(&[TCP_80], vec![around_b()]),
        );
        // Upstream's second step updates the policy of the same name rather than adding one, so the
        // block with the exception is gone and only x/b's own address remains.
        let overlap = t(
            "should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed",
            &["x/a", "x/b", "x/c"],
        );
        out.push(overlap.step(
            1,
            "x/a may reach the /4 around x/b except x/b",
            &[TCP_80],
            vec![around_b()],
        ));
        out.push(overlap.step(
            2,
            "the policy updated to x/b's address alone",
            &[TCP_80],
            vec![policy(
                "x",
                "a-out-around-b",
                labels(&[("pod", "a")]),
                None,
                Some(vec![to(vec![block(x_b.clone(), vec![])], vec![])]),
            )],
        ));
    }

    let open_out = || {
        policy(
            "x",
            "a-out-anywhere",
            labels(&[("pod", "a")]),
            None,
            Some(vec![to(vec![], vec![])]),
        )
    };
    let independent = t(
        "should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector",
        &["x/a", "x/b", "y/a"],
    );
    out.push(independent.step(1, "x/a's egress open to all", &[TCP_80], vec![open_out()]));
    out.push(independent.step(
        2,
        "a second policy denies ingress to x/a",
        &[TCP_80],
        vec![
            open_out(),
            policy(
                "x",
                "a-in-denied",
                labels(&[("pod", "a")]),
                Some(vec![]),
                None,
            ),
        ],
    ));

    out.push(
        t(
            "should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't support SCTP",
            &["x/a", "y/a"],
        )
        .once(
            &[TCP_81],
            vec![
                policy("x", "deny-ingress", everything(), Some(vec![]), None),
                policy(
                    "x",
                    "a-sctp-81",
                    labels(&[("pod", "a")]),
                    Some(vec![from(vec![], vec![port(81, Some("SCTP"))])]),
                    None,
                ),
            ],
        ),
    );

    out.push(
        t(
            "should properly isolate pods that are selected by a policy allowing SCTP, even if the plugin doesn't support SCTP",
            &["x/a", "y/a"],
        )
        .once(
            &[TCP_81],
            vec![policy(
                "x",
                "a-sctp-80",
                labels(&[("pod", "a")]),
                Some(vec![from(vec![], vec![port(80, Some("SCTP"))])]),
                None,
            )],
        ),
    );

    out.push(
        t(
            "should not allow access by TCP when a policy specifies only UDP",
            &["x/a", "y/a"],
        )
        .once(
            &[TCP_81],
            vec![policy(
                "x",
                "a-udp-81",
                labels(&[("pod", "a")]),
                Some(vec![from(vec![], vec![port(81, Some("UDP"))])]),
                None,
            )],
        ),
    );

    out.push(
        t(
            "should enforce policy to allow traffic based on NamespaceSelector with MatchLabels using default ns label",
            &["x/a", "x/b", "y/a", "z/a"],
        )
        .once(
            &[TCP_80],
            vec![policy(
                "x",
                "a-from-y-by-name-label",
                labels(&[("pod", "a")]),
                Some(vec![from(vec![namespaces(ns_named("y"))], vec![])]),
                None,
            )],
        ),
    );

    out.push(
        t(
            "should enforce policy based on NamespaceSelector with MatchExpressions using default ns label",
            &["x/a", "x/b", "y/a", "z/a"],
        )
        .once(
            &[TCP_80],
            vec![policy(
                "x",
                "a-out-not-to-y",
                labels(&[("pod", "a")]),
                None,
                Some(vec![to(vec![namespaces(expr(NAME_LABEL, "NotIn", &["y"]))], vec![])]),
            )],
        ),
    );
}

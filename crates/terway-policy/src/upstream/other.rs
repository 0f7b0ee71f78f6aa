//! The UDP and SCTP suites: three tests each, the same policies over the other protocol.

use super::kit::*;
use super::{Scenario, Suite};
use crate::model::World;

pub(super) fn push(m: &World, out: &mut Vec<Scenario>) {
    for (suite, proto, on_80, on_81) in [
        (Suite::Udp, "UDP", UDP_80, UDP_81),
        (Suite::Sctp, "SCTP", SCTP_80, SCTP_81),
    ] {
        let t = |it, pods| Test {
            model: m,
            suite,
            it,
            pods,
        };

        out.push(
            t(
                "should support a 'default-deny-ingress' policy",
                &["x/a", "x/b", "y/a", "y/b"],
            )
            .once(
                &[on_80],
                vec![policy("x", "deny-all", everything(), Some(vec![]), None)],
            ),
        );

        out.push(
            t(
                "should enforce policy based on Ports",
                &["x/a", "x/b", "y/a", "z/a"],
            )
            .once(
                &[on_81],
                vec![policy(
                    "x",
                    "a-from-y-on-81",
                    labels(&[("pod", "a")]),
                    Some(vec![from(
                        vec![namespaces(ns_named("y"))],
                        vec![port(81, Some(proto))],
                    )]),
                    None,
                )],
            ),
        );

        out.push(
            t(
                "should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector",
                &["x/a", "x/b", "y/a"],
            )
            .once(
                &[on_80],
                vec![policy(
                    "x",
                    "a-from-y-a",
                    labels(&[("pod", "a")]),
                    Some(vec![from(vec![pods_in(ns_named("y"), labels(&[("pod", "a")]))], vec![])]),
                    None,
                )],
            ),
        );
    }
}

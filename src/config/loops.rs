//! Finds the routes of a file that can feed their own source, through their own sinks or
//! through other routes of the file, and resolves `count_hops: auto` with it: such a route
//! writes the loop guard's `bridge-hops` on every message; any other only carries on a
//! count a message already has, so no header is added where no loop can form.
//!
//! It errs toward a loop: a destination known only per message (a template, a reply-to)
//! or chosen by the broker (an exchange's bindings, a topic's subscriptions) is taken to
//! reach every source of its system, and two connections of one system are taken to reach
//! one broker. A reply relay is a flow of its own (reply source to the requesters).

use std::collections::BTreeMap;

use super::model::CountHops;
use super::plan::{RoutePlan, SinkPlan};
use std::sync::Arc;

use crate::adapter::Connection;
use crate::address::Endpoint;
use crate::message::HopCounting;

/// One path messages take through a route: from one source to its destinations.
struct Flow {
    source: Endpoint,
    /// Connection and path of each destination; no path when it is known only per message.
    outputs: Vec<(String, Option<String>)>,
}

fn output(sink: &SinkPlan) -> (String, Option<String>) {
    let path =
        (sink.path.is_constant() && !sink.to_reply_address).then(|| sink.path.source().to_owned());
    (sink.connection.clone(), path)
}

/// The flows of `routes`, each route's main flow followed by its reply flow if it has one.
fn flows(routes: &[RoutePlan]) -> Vec<Flow> {
    let mut flows = Vec::new();
    for route in routes {
        let dead_letter = route.dead_letter.iter().map(output);
        flows.push(Flow {
            source: route.source.endpoint.clone(),
            outputs: route
                .sinks
                .iter()
                .map(output)
                .chain(dead_letter.clone())
                .collect(),
        });
        if let Some(reply) = &route.reply {
            // Replies go to each requester's reply-to, on the requests' connection.
            let requesters = (route.source.endpoint.connection.clone(), None);
            flows.push(Flow {
                source: reply.source.endpoint.clone(),
                outputs: std::iter::once(requesters).chain(dead_letter).collect(),
            });
        }
    }
    flows
}

/// Whether `from` may send something that `to` receives.
fn feeds(from: &Flow, to: &Flow, connections: &BTreeMap<String, Arc<dyn Connection>>) -> bool {
    let Some(source) = connections.get(&to.source.connection) else {
        return true;
    };
    from.outputs
        .iter()
        .any(|(connection, path)| match connections.get(connection) {
            Some(sink) => {
                sink.type_name() == source.type_name()
                    && sink.may_feed(path.as_deref(), &to.source.path)
            }
            None => true,
        })
}

/// For each flow, whether it can reach itself again.
fn on_loop(flows: &[Flow], connections: &BTreeMap<String, Arc<dyn Connection>>) -> Vec<bool> {
    let next: Vec<Vec<usize>> = flows
        .iter()
        .map(|from| {
            (0..flows.len())
                .filter(|&to| feeds(from, &flows[to], connections))
                .collect()
        })
        .collect();
    (0..flows.len())
        .map(|start| {
            let mut seen = vec![false; flows.len()];
            let mut stack = next[start].clone();
            while let Some(flow) = stack.pop() {
                if flow == start {
                    return true;
                }
                if !std::mem::replace(&mut seen[flow], true) {
                    stack.extend(&next[flow]);
                }
            }
            false
        })
        .collect()
}

fn counting(written: CountHops, on_loop: bool) -> HopCounting {
    match written {
        CountHops::Always => HopCounting::Always,
        CountHops::Never => HopCounting::Never,
        CountHops::Auto if on_loop => HopCounting::Always,
        CountHops::Auto => HopCounting::WhenPresent,
    }
}

/// Sets each route's (and reply relay's) `hop_counting` from its `count_hops`.
pub(super) fn resolve(
    routes: &mut [RoutePlan],
    connections: &BTreeMap<String, Arc<dyn Connection>>,
) {
    let mut on_loop = on_loop(&flows(routes), connections).into_iter();
    for route in routes {
        route.hop_counting = counting(route.count_hops, on_loop.next().unwrap_or(true));
        if let Some(reply) = &mut route.reply {
            reply.hop_counting = counting(route.count_hops, on_loop.next().unwrap_or(true));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The resolved counting of each route's main flow, and of its reply flow if any.
    fn resolved(routes: &str) -> Vec<(HopCounting, Option<HopCounting>)> {
        let text = format!(
            "settings: {{reply_signing_key: 0123456789abcdef}}\nconnections:\n  mem: {{type: memory}}\n  out: {{type: stdio}}\n  kafka: {{type: kafka, brokers: 'h:1'}}\n  kafka2: {{type: kafka, brokers: 'h:2'}}\n  rabbit: {{type: rabbitmq, url: 'amqp://h'}}\n  aws: {{type: aws, region: eu-west-1}}\nroutes:\n{routes}"
        );
        let plan = super::super::load_str(&text, "f.yaml", &|_: &str| None)
            .unwrap_or_else(|e| panic!("{e}"));
        plan.routes
            .iter()
            .map(|r| {
                (
                    r.hop_counting,
                    r.reply.as_ref().map(|reply| reply.hop_counting),
                )
            })
            .collect()
    }

    fn mains(routes: &str) -> Vec<HopCounting> {
        resolved(routes).into_iter().map(|(main, _)| main).collect()
    }

    use HopCounting::{Always, Never, WhenPresent};

    #[test]
    fn a_chain_without_a_way_back_adds_no_header() {
        let routes = "  - {name: a, from: mem:in, to: mem:mid, dead_letter: mem:dlq}\n  - {name: b, from: mem:mid, to: [mem:out, out:stdout], dead_letter: mem:dlq}\n";
        assert_eq!(mains(routes), [WhenPresent, WhenPresent]);
    }

    #[test]
    fn routes_that_feed_each_other_count_and_the_route_leading_in_does_not() {
        let routes = "  - {name: in, from: mem:in, to: mem:a, dead_letter: mem:dlq}\n  - {name: there, from: mem:a, to: mem:b, dead_letter: mem:dlq}\n  - {name: back, from: mem:b, to: mem:a, dead_letter: mem:dlq}\n  - {name: self, from: mem:s, to: mem:s, dead_letter: mem:dlq}\n";
        assert_eq!(mains(routes), [WhenPresent, Always, Always, Always]);
    }

    #[test]
    fn a_loop_through_a_dead_letter_counts() {
        let routes = "  - {name: work, from: mem:in, to: mem:out, dead_letter: mem:dlq}\n  - {name: replay, from: mem:dlq, to: mem:in, dead_letter: mem:parked}\n";
        assert_eq!(mains(routes), [Always, Always]);
    }

    #[test]
    fn written_choices_win_over_the_file() {
        let routes = "  - {name: there, from: mem:a, to: mem:b, dead_letter: mem:dlq, count_hops: false}\n  - {name: back, from: mem:b, to: mem:a, dead_letter: mem:dlq, count_hops: 'auto'}\n  - {name: out, from: mem:in, to: mem:plain, dead_letter: mem:dlq, count_hops: true}\n";
        assert_eq!(mains(routes), [Never, Always, Always]);
    }

    #[test]
    fn a_templated_destination_may_reach_any_source_of_its_system() {
        let routes = "  - {name: there, from: mem:a, to: 'mem:{{ headers.next }}', dead_letter: mem:dlq}\n  - {name: back, from: mem:b, to: mem:a, dead_letter: mem:dlq}\n  - {name: elsewhere, from: kafka:x, to: kafka:y, dead_letter: kafka:dlq}\n";
        assert_eq!(mains(routes), [Always, Always, WhenPresent]);
    }

    #[test]
    fn kafka_topics_match_across_connections_and_partitions() {
        let routes = "  - {name: a, from: kafka:x, to: kafka2:y/3, dead_letter: kafka:dlq}\n  - {name: b, from: kafka2:y, to: kafka:x, dead_letter: kafka:dlq}\n  - {name: c, from: kafka:p, to: kafka:q, dead_letter: kafka:dlq}\n";
        assert_eq!(mains(routes), [Always, Always, WhenPresent]);
    }

    #[test]
    fn exchanges_and_topics_may_reach_any_queue_of_their_system() {
        let routes = "  - {name: to-exchange, from: kafka:x, to: rabbit:exchange/events/k, dead_letter: kafka:dlq}\n  - {name: from-queue, from: rabbit:queue/q, to: kafka:x, dead_letter: rabbit:queue/dlq}\n  - {name: to-queue, from: kafka:y, to: rabbit:queue/other, dead_letter: kafka:dlq}\n  - {name: to-sns, from: kafka:z, to: aws:sns/t, dead_letter: kafka:dlq}\n  - {name: from-sqs, from: aws:sqs/q, to: kafka:z, dead_letter: aws:sqs/dlq}\n  - {name: queue-url, from: kafka:w, to: 'aws:sqs/https://sqs.eu-west-1.amazonaws.com/1/r', dead_letter: kafka:dlq}\n  - {name: from-r, from: aws:sqs/r, to: kafka:v, dead_letter: aws:sqs/dlq}\n";
        assert_eq!(
            mains(routes),
            [
                Always,
                Always,
                WhenPresent,
                Always,
                Always,
                WhenPresent,
                WhenPresent
            ]
        );
    }

    #[test]
    fn a_reply_relay_is_a_flow_of_its_own() {
        // Requests leave for Kafka and replies come back from another topic: no loop, even
        // though a reply-to could be any queue, the requests' own among them.
        let routes = "  - name: rpc\n    from: rabbit:queue/requests\n    to: kafka:requests\n    dead_letter: rabbit:queue/dlq\n    reply: {from: kafka:replies}\n";
        assert_eq!(resolved(routes), [(WhenPresent, Some(WhenPresent))]);
        let looping = "  - name: rpc\n    from: rabbit:queue/requests\n    to: kafka:replies\n    dead_letter: rabbit:queue/dlq\n    reply: {from: kafka:replies}\n";
        assert_eq!(resolved(looping), [(Always, Some(Always))]);
    }
}

//! Router behaviour on in-process memory queues, one behaviour per test.

mod support;

#[path = "router/shaping.rs"]
mod shaping;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bridge::adapter::SendError;
use bridge::message::{HeaderValue, Message, reserved};
use support::{start, wait_for};

const FAST_RETRY: &str = "retry: {max_attempts: 3, initial_backoff: 10ms, max_backoff: 50ms}";

fn fan_out_yaml(extra: &str) -> String {
    format!(
        "connections:\n  mem: {{type: memory}}\nroutes:\n  - name: fan\n    from: mem:in\n    to: [mem:a, mem:b]\n    dead_letter: mem:dlq\n    {FAST_RETRY}\n{extra}"
    )
}

/// The `bridge-dlq-error` of every dead letter in the `dlq` queue, in order.
fn dead_letter_errors(harness: &support::Harness) -> Vec<String> {
    harness
        .queue("dlq")
        .messages()
        .iter()
        .map(|m| m.headers.get_text(reserved::DLQ_ERROR).unwrap().to_owned())
        .collect()
}

fn keyed(body: &str, key: &str) -> Message {
    let mut message = Message::new(body.to_owned());
    message.key = Some(key.to_owned().into());
    message
}

#[tokio::test]
async fn source_is_not_acked_before_every_required_sink_confirmed() {
    let harness = start(&fan_out_yaml("")).await;
    let (input, b) = (harness.queue("in"), harness.queue("b"));
    b.hold();
    input.push(Message::new("m"));
    wait_for(&b, "the send to b is held", |q| q.held() == 1).await;
    wait_for(&harness.queue("a"), "a confirmed", |q| q.len() == 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(input.acked(), 0, "acked while sink b had not confirmed");
    assert_eq!(input.in_flight(), 1);
    b.release();
    wait_for(&input, "the source ack", |q| q.acked() == 1).await;
    assert!(harness.stop().await.is_clean());
}

#[tokio::test]
async fn sink_failing_twice_then_succeeding_gives_one_ack_and_no_dead_letter() {
    let harness = start(&fan_out_yaml("")).await;
    harness.queue("a").fail_next([
        SendError::transient("down"),
        SendError::transient("still down"),
    ]);
    harness.queue("in").push(Message::new("m"));
    wait_for(&harness.queue("in"), "the source ack", |q| q.acked() == 1).await;
    assert_eq!(harness.queue("a").len(), 1);
    assert_eq!(harness.queue("b").len(), 1);
    assert!(harness.queue("dlq").is_empty());
    assert_eq!(harness.queue("in").retried(), 0);
    harness.stop().await;
}

#[tokio::test]
async fn permanent_failure_gives_one_dead_letter_with_context_then_an_ack() {
    let harness = start(&fan_out_yaml("")).await;
    harness
        .queue("b")
        .fail_next([SendError::permanent("message too large")]);
    let mut message = Message::new("payload");
    message.headers.push("app", "kept");
    harness.queue("in").push(message);
    wait_for(&harness.queue("in"), "the source ack", |q| q.acked() == 1).await;
    let letters = harness.queue("dlq").messages();
    assert_eq!(letters.len(), 1, "exactly one dead letter");
    let letter = &letters[0];
    let header = |name: &str| letter.headers.get_text(name).map(str::to_owned);
    assert_eq!(letter.body, "payload");
    assert_eq!(header("app").as_deref(), Some("kept"));
    assert_eq!(header(reserved::DLQ_ROUTE).as_deref(), Some("fan"));
    assert_eq!(header(reserved::DLQ_SINK).as_deref(), Some("mem:b"));
    assert_eq!(
        header(reserved::DLQ_ERROR).as_deref(),
        Some("message too large")
    );
    assert_eq!(
        header(reserved::DLQ_ERROR_CLASS).as_deref(),
        Some("permanent")
    );
    assert_eq!(header(reserved::DLQ_ATTEMPTS).as_deref(), Some("1"));
    assert_eq!(header(reserved::DLQ_SOURCE).as_deref(), Some("mem:in"));
    assert_eq!(header(reserved::DLQ_SOURCE_OFFSET).as_deref(), Some("0"));
    assert!(
        header(reserved::DLQ_FIRST_FAILURE).is_some()
            && header(reserved::DLQ_LAST_FAILURE).is_some()
    );
    assert_eq!(harness.queue("a").len(), 1, "the other sink still got it");
    harness.stop().await;
}

#[tokio::test]
async fn retries_exhausted_are_dead_lettered_as_transient_with_the_attempt_count() {
    let harness = start(&fan_out_yaml("")).await;
    harness
        .queue("a")
        .fail_when(|_| Some(SendError::transient("broker unreachable")));
    harness.queue("in").push(Message::new("m"));
    wait_for(&harness.queue("in"), "the source ack", |q| q.acked() == 1).await;
    let letter = &harness.queue("dlq").messages()[0];
    assert_eq!(
        letter.headers.get_text(reserved::DLQ_ERROR_CLASS),
        Some("transient")
    );
    assert_eq!(letter.headers.get_text(reserved::DLQ_ATTEMPTS), Some("3"));
    harness.stop().await;
}

#[tokio::test]
async fn with_the_dead_letter_sink_down_the_message_is_retried_never_acked() {
    let harness = start(&fan_out_yaml("")).await;
    harness
        .queue("a")
        .fail_when(|_| Some(SendError::permanent("refused")));
    harness
        .queue("dlq")
        .fail_when(|_| Some(SendError::transient("dead letter down")));
    harness.queue("in").push(Message::new("m"));
    wait_for(&harness.queue("in"), "two redeliveries", |q| {
        q.retried() >= 2
    })
    .await;
    assert_eq!(harness.queue("in").acked(), 0);
    assert!(harness.queue("dlq").is_empty());
    harness.stop().await;
}

#[tokio::test]
async fn without_a_dead_letter_the_source_broker_rejects() {
    let yaml = format!(
        "connections:\n  mem: {{type: memory}}\nroutes:\n  - name: r\n    from: mem:in\n    to: mem:out\n    {FAST_RETRY}\n"
    );
    let harness = start(&yaml).await;
    harness
        .queue("out")
        .fail_next([SendError::permanent("unroutable")]);
    harness.queue("in").push(Message::new("m"));
    wait_for(&harness.queue("in"), "the reject", |q| {
        q.rejected().len() == 1
    })
    .await;
    assert!(harness.queue("in").rejected()[0].1.contains("unroutable"));
    assert_eq!(harness.queue("in").acked(), 0);
    harness.stop().await;
}

#[tokio::test]
async fn failing_optional_sink_does_not_hold_back_the_ack() {
    let yaml = format!(
        "connections:\n  mem: {{type: memory}}\nroutes:\n  - name: r\n    from: mem:in\n    to:\n      - mem:a\n      - {{endpoint: mem:audit, optional: true}}\n    dead_letter: mem:dlq\n    {FAST_RETRY}\n"
    );
    let harness = start(&yaml).await;
    harness
        .queue("audit")
        .fail_when(|_| Some(SendError::permanent("audit refused")));
    harness.queue("in").push(Message::new("m"));
    wait_for(&harness.queue("in"), "the ack", |q| q.acked() == 1).await;
    assert_eq!(harness.queue("a").len(), 1);
    assert!(
        harness.queue("dlq").is_empty(),
        "optional failures are not dead-lettered"
    );
    harness.stop().await;
}

#[tokio::test]
async fn messages_failing_the_route_condition_are_acked_without_forwarding() {
    let yaml = "connections:\n  mem: {type: memory}\nroutes:\n  - name: r\n    from: mem:in\n    to: mem:out\n    when: 'headers.type == \"order\" && body.amount > 10'\n";
    let harness = start(yaml).await;
    let mut order = Message::new(r#"{"amount": 12}"#);
    order.headers.push("type", "order");
    let mut small = order.clone();
    small.body = r#"{"amount": 1}"#.into();
    harness.queue("in").push(Message::new(r#"{"amount": 99}"#));
    harness.queue("in").push(small);
    harness.queue("in").push(order);
    wait_for(&harness.queue("in"), "three acks", |q| q.acked() == 3).await;
    let out = harness.queue("out").messages();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].body, r#"{"amount": 12}"#);
    harness.stop().await;
}

#[tokio::test]
async fn body_that_is_not_json_under_a_json_condition_is_dead_lettered_not_dropped() {
    let yaml = "connections:\n  mem: {type: memory}\nroutes:\n  - name: r\n    from: mem:in\n    to: mem:out\n    when: 'body.amount > 10'\n    dead_letter: mem:dlq\n";
    let harness = start(yaml).await;
    harness.queue("in").push(Message::new("not json"));
    wait_for(&harness.queue("in"), "the ack", |q| q.acked() == 1).await;
    let letters = harness.queue("dlq").messages();
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0]
            .headers
            .get_text(reserved::DLQ_ERROR)
            .unwrap()
            .contains("not JSON")
    );
    harness.stop().await;
}

#[tokio::test]
async fn templated_destination_and_key_are_rendered_per_message() {
    let yaml = "connections:\n  mem: {type: memory}\nroutes:\n  - name: r\n    from: mem:in\n    to:\n      - endpoint: 'mem:orders-{{ headers.region }}'\n        key: '{{ body.customer }}'\n    dead_letter: mem:dlq\n";
    let harness = start(yaml).await;
    let mut message = Message::new(r#"{"customer": "c-7"}"#);
    message.headers.push("region", "eu");
    harness.queue("in").push(message);
    harness
        .queue("in")
        .push(Message::new(r#"{"customer": "c-8"}"#));
    wait_for(&harness.queue("in"), "two acks", |q| q.acked() == 2).await;
    let routed = harness.queue("orders-eu").messages();
    assert_eq!(routed.len(), 1);
    assert_eq!(routed[0].key.as_deref(), Some(&b"c-7"[..]));
    assert_eq!(
        harness.queue("dlq").len(),
        1,
        "the message without a region header is dead-lettered"
    );
    harness.stop().await;
}

#[tokio::test]
async fn per_key_order_holds_with_8_messages_in_flight_despite_retries() {
    let yaml = "connections:\n  mem: {type: memory}\nroutes:\n  - name: r\n    from: mem:in\n    to: mem:out\n    dead_letter: mem:dlq\n    ordering: key\n    max_in_flight: 8\n    retry: {max_attempts: 10, initial_backoff: 1ms, max_backoff: 5ms}\n";
    let harness = start(yaml).await;
    let out = harness.queue("out");
    let seen = Arc::new(Mutex::new(HashMap::<bytes::Bytes, u32>::new()));
    let tries = seen.clone();
    // Every third message fails on its first attempt, forcing retries mid-stream.
    out.fail_when(move |message| {
        let mut tries = tries.lock().unwrap();
        let count = tries.entry(message.body.clone()).or_default();
        *count += 1;
        let number: u32 = std::str::from_utf8(&message.body)
            .unwrap()
            .split('-')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        (number.is_multiple_of(3) && *count == 1).then(|| SendError::transient("flaky"))
    });
    let input = harness.queue("in");
    for n in 0..400 {
        let key = format!("k{}", n % 16);
        input.push(keyed(&format!("{key}-{n}"), &key));
    }
    wait_for(&input, "every message acked", |q| q.acked() == 400).await;
    let mut last: HashMap<String, u32> = HashMap::new();
    for message in out.messages() {
        let body = String::from_utf8(message.body.to_vec()).unwrap();
        let (key, number) = body.split_once('-').unwrap();
        let number: u32 = number.parse().unwrap();
        if let Some(previous) = last.insert(key.to_owned(), number) {
            assert!(
                previous < number,
                "key {key}: {number} arrived after {previous}"
            );
        }
    }
    assert_eq!(out.len(), 400);
    assert!(harness.queue("dlq").is_empty());
    harness.stop().await;
}

#[tokio::test]
async fn in_flight_is_bounded_by_max_in_flight() {
    let yaml = "connections:\n  mem: {type: memory}\nroutes:\n  - name: r\n    from: mem:in\n    to: mem:out\n    dead_letter: mem:dlq\n    max_in_flight: 8\n";
    let harness = start(yaml).await;
    let (input, out) = (harness.queue("in"), harness.queue("out"));
    out.hold();
    for n in 0..50 {
        input.push(Message::new(format!("{n}")));
    }
    wait_for(&out, "8 held sends", |q| q.held() == 8).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(out.held(), 8);
    assert_eq!(input.in_flight(), 8);
    out.release();
    wait_for(&input, "all acked", |q| q.acked() == 50).await;
    harness.stop().await;
}

/// The one message a loop ended in the dead letter `dlq`.
async fn looping_letter(harness: &support::Harness) -> Message {
    wait_for(
        &harness.queue("dlq"),
        "the looping message is dead-lettered",
        |q| q.len() == 1,
    )
    .await;
    harness.queue("dlq").messages().remove(0)
}

#[tokio::test]
async fn message_looping_between_two_routes_stops_at_the_hop_limit() {
    let yaml = "settings: {max_hops: 5}\nconnections:\n  mem: {type: memory}\nroutes:\n  - name: there\n    from: mem:a\n    to: mem:b\n    dead_letter: mem:dlq\n  - name: back\n    from: mem:b\n    to: mem:a\n    dead_letter: mem:dlq\n";
    let harness = start(yaml).await;
    harness.queue("a").push(Message::new("ping"));
    let letter = &looping_letter(&harness).await;
    assert_eq!(letter.headers.get_text(reserved::HOPS), Some("5"));
    assert!(
        letter
            .headers
            .get_text(reserved::DLQ_ERROR)
            .unwrap()
            .contains("hop limit")
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(harness.queue("a").is_empty() && harness.queue("b").is_empty());
    harness.stop().await;
}

/// Pushes to `in` a message without a hop count, then one that carries a count of 2.
fn push_plain_and_counted(harness: &support::Harness) {
    harness.queue("in").push(Message::new("no header"));
    let mut counted = Message::new("counted");
    counted
        .headers
        .set(reserved::HOPS, HeaderValue::Text("2".into()));
    harness.queue("in").push(counted);
}

/// By default (`count_hops: auto`) a route that cannot feed its own source adds no hop
/// header, but carries on a count a message already has (another bridge's, say).
#[tokio::test]
async fn a_route_that_cannot_loop_adds_no_hop_header_and_carries_a_count_on() {
    let yaml = "connections:\n  mem: {type: memory}\nroutes:\n  - name: out\n    from: mem:in\n    to: mem:plain\n    dead_letter: mem:dlq\n";
    let harness = start(yaml).await;
    push_plain_and_counted(&harness);
    wait_for(&harness.queue("plain"), "both forwarded", |q| q.len() == 2).await;
    let plain = harness.queue("plain").messages();
    assert_eq!(plain[0].headers.get_text(reserved::HOPS), None);
    assert_eq!(plain[1].headers.get_text(reserved::HOPS), Some("3"));
    harness.stop().await;
}

/// A route with `count_hops: false` passes the received count on unchanged, so one that
/// counts still stops the loop (later); the one that does not adds no header of its own.
#[tokio::test]
async fn a_route_that_does_not_count_hops_passes_the_count_on() {
    let yaml = "settings: {max_hops: 5}\nconnections:\n  mem: {type: memory}\nroutes:\n  - name: there\n    from: mem:a\n    to: mem:b\n    dead_letter: mem:dlq\n  - name: back\n    from: mem:b\n    to: mem:a\n    dead_letter: mem:dlq\n    count_hops: false\n  - name: out\n    from: mem:in\n    to: mem:plain\n    dead_letter: mem:dlq\n    count_hops: false\n";
    let harness = start(yaml).await;
    push_plain_and_counted(&harness);
    harness.queue("a").push(Message::new("ping"));
    wait_for(&harness.queue("plain"), "both forwarded", |q| q.len() == 2).await;
    let plain = harness.queue("plain").messages();
    assert_eq!(plain[0].headers.get_text(reserved::HOPS), None);
    assert_eq!(plain[1].headers.get_text(reserved::HOPS), Some("2"));
    let letter = &looping_letter(&harness).await;
    // Only `there` counts, so the loop still ends: `back` receives the fifth count.
    assert_eq!(letter.headers.get_text(reserved::HOPS), Some("5"));
    assert_eq!(letter.headers.get_text(reserved::DLQ_ROUTE), Some("back"));
    harness.stop().await;
}

#[tokio::test]
async fn shutdown_drains_in_flight_messages_and_reports_clean() {
    let harness = start(&fan_out_yaml("")).await;
    let (input, a) = (harness.queue("in"), harness.queue("a"));
    a.hold();
    for n in 0..5 {
        input.push(Message::new(format!("{n}")));
    }
    wait_for(&a, "5 held sends", |q| q.held() == 5).await;
    let shutdown = harness.shutdown.clone();
    let run = tokio::spawn(harness.stop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(shutdown.is_cancelled());
    input.push(Message::new("after shutdown"));
    a.release();
    let report = run.await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(
        input.acked(),
        5,
        "every in-flight message settled before exit"
    );
    assert_eq!(input.len(), 1, "nothing received after shutdown");
    assert_eq!(a.len(), 5);
}

#[tokio::test]
async fn drain_timeout_leaves_unsettled_messages_for_redelivery() {
    let harness = start(&fan_out_yaml("settings: {drain_timeout: 200ms}\n")).await;
    let (input, a) = (harness.queue("in"), harness.queue("a"));
    a.hold();
    input.push(Message::new("stuck"));
    wait_for(&a, "held send", |q| q.held() == 1).await;
    let report = harness.stop().await;
    assert!(report.drain_timed_out);
    assert_eq!(input.acked(), 0);
    assert_eq!(
        input.retried(),
        1,
        "the unsettled message goes back to its queue"
    );
}

#[tokio::test]
async fn finite_source_ends_the_run_once_everything_settled() {
    let yaml = "connections:\n  mem: {type: memory}\nroutes:\n  - name: r\n    from: mem:in\n    to: mem:out\n";
    let harness = start(yaml).await;
    let input = harness.queue("in");
    input.push(Message::new("1"));
    input.push(Message::new("2"));
    input.close();
    let out = harness.queue("out");
    let report = harness.finished().await;
    assert!(report.is_clean());
    assert_eq!(out.len(), 2);
    assert_eq!(input.acked(), 2);
}

const RPC_YAML: &str = "settings: {reply_signing_key: 'a-test-key-of-16+bytes'}\nconnections:\n  mem: {type: memory}\nroutes:\n  - name: rpc\n    from: mem:requests\n    to: mem:forwarded\n    reply: {from: mem:replies, timeout: 2s}\n    dead_letter: mem:dlq\n";

fn request(body: &str, reply_to: &str, correlation: &str) -> Message {
    let mut message = Message::new(body.to_owned());
    message.reply_to = Some(reply_to.to_owned());
    message.correlation_id = Some(correlation.to_owned());
    message
}

/// Answers every forwarded request by echoing its correlation id, as a replier does.
async fn echo_replies(harness: &support::Harness, count: usize) {
    let forwarded = harness.queue("forwarded");
    wait_for(&forwarded, "forwarded requests", |q| q.len() >= count).await;
    for request in forwarded.messages() {
        assert_eq!(
            request.reply_to.as_deref(),
            Some("replies"),
            "repliers answer to the route's reply address"
        );
        let mut reply = Message::new(format!(
            "reply to {}",
            String::from_utf8_lossy(&request.body)
        ));
        reply.correlation_id = request.correlation_id.clone();
        harness.queue("replies").push(reply);
    }
}

#[tokio::test]
async fn replies_reach_their_own_requester_with_the_original_correlation_id() {
    let harness = start(RPC_YAML).await;
    harness
        .queue("requests")
        .push(request("a1", "client-a", "corr-a1"));
    harness
        .queue("requests")
        .push(request("b1", "client-b", "corr-b1"));
    echo_replies(&harness, 2).await;
    let (a, b) = (harness.queue("client-a"), harness.queue("client-b"));
    wait_for(&a, "client a's reply", |q| q.len() == 1).await;
    wait_for(&b, "client b's reply", |q| q.len() == 1).await;
    assert_eq!(a.messages()[0].correlation_id.as_deref(), Some("corr-a1"));
    assert_eq!(a.messages()[0].body, "reply to a1");
    assert_eq!(a.messages()[0].reply_to, None);
    assert_eq!(b.messages()[0].correlation_id.as_deref(), Some("corr-b1"));
    assert!(harness.queue("dlq").is_empty());
    harness.stop().await;
}

#[tokio::test]
async fn a_forged_correlation_id_is_never_relayed() {
    let harness = start(RPC_YAML).await;
    harness
        .queue("requests")
        .push(request("a1", "client-a", "corr-a1"));
    let forwarded = harness.queue("forwarded");
    wait_for(&forwarded, "the forwarded request", |q| q.len() == 1).await;
    let token = forwarded.messages()[0].correlation_id.clone().unwrap();
    // A replier tries to redirect the reply by editing the token's payload.
    let mut forged = token.clone().into_bytes();
    forged[4] = if forged[4] == b'A' { b'B' } else { b'A' };
    let mut reply = Message::new("redirected?");
    reply.correlation_id = Some(String::from_utf8(forged).unwrap());
    harness.queue("replies").push(reply);
    let mut invented = Message::new("invented");
    invented.correlation_id = Some("corr-a1".into());
    harness.queue("replies").push(invented);
    wait_for(&harness.queue("dlq"), "both refused replies", |q| {
        q.len() == 2
    })
    .await;
    for letter in harness.queue("dlq").messages() {
        assert!(
            letter
                .headers
                .get_text(reserved::DLQ_ERROR)
                .unwrap()
                .contains("reply not relayed")
        );
    }
    assert!(harness.queue("client-a").is_empty());
    harness.stop().await;
}

#[tokio::test]
async fn a_late_reply_goes_to_the_dead_letter_or_is_dropped_as_configured() {
    let harness = start(&RPC_YAML.replace("timeout: 2s", "timeout: 100ms")).await;
    harness
        .queue("requests")
        .push(request("a1", "client-a", "corr-a1"));
    wait_for(&harness.queue("forwarded"), "the forwarded request", |q| {
        q.len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    echo_replies(&harness, 1).await;
    wait_for(&harness.queue("dlq"), "the late reply", |q| q.len() == 1).await;
    assert!(
        harness.queue("dlq").messages()[0]
            .headers
            .get_text(reserved::DLQ_ERROR)
            .unwrap()
            .contains("deadline")
    );
    assert!(harness.queue("client-a").is_empty());
    harness.stop().await;

    let dropping = RPC_YAML.replace("timeout: 2s", "timeout: 100ms, unmatched: drop");
    let harness = start(&dropping).await;
    harness
        .queue("requests")
        .push(request("a2", "client-a", "corr-a2"));
    wait_for(&harness.queue("forwarded"), "the forwarded request", |q| {
        q.len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    echo_replies(&harness, 1).await;
    wait_for(
        &harness.queue("replies"),
        "the late reply acknowledged",
        |q| q.acked() == 1,
    )
    .await;
    assert!(harness.queue("dlq").is_empty() && harness.queue("client-a").is_empty());
    harness.stop().await;
}

#[tokio::test]
async fn messages_without_a_reply_address_pass_a_reply_route_unchanged() {
    let harness = start(RPC_YAML).await;
    let mut event = Message::new("event");
    event.correlation_id = Some("c".into());
    harness.queue("requests").push(event);
    wait_for(&harness.queue("forwarded"), "the event", |q| q.len() == 1).await;
    let forwarded = &harness.queue("forwarded").messages()[0];
    assert_eq!(forwarded.correlation_id.as_deref(), Some("c"));
    assert_eq!(forwarded.reply_to, None);
    harness.stop().await;
}

#[tokio::test]
async fn a_sink_whose_broker_is_unavailable_is_waited_for_without_using_up_attempts() {
    let yaml = "connections:\n  mem: {type: memory}\nroutes:\n  - name: r\n    from: mem:in\n    to: mem:out\n    dead_letter: mem:dlq\n    retry: {max_attempts: 2, initial_backoff: 1ms, max_backoff: 5ms}\n";
    let harness = start(yaml).await;
    // Far more failures than attempts: an outage is waited out, not dead-lettered.
    harness
        .queue("out")
        .fail_next((0..8).map(|_| SendError::unavailable("connection refused")));
    harness.queue("in").push(Message::new("m"));
    wait_for(&harness.queue("in"), "the ack", |q| q.acked() == 1).await;
    assert_eq!(harness.queue("out").len(), 1);
    assert!(harness.queue("dlq").is_empty());
    harness.stop().await;
}

#[tokio::test]
async fn dedup_drops_a_settled_identity_and_forwards_an_unsettled_one_again() {
    let yaml = "connections:\n  mem: {type: memory}\nroutes:\n  - name: r\n    from: mem:in\n    to: mem:out\n    dead_letter: mem:dlq\n    retry: {max_attempts: 1, initial_backoff: 1ms, max_backoff: 10ms}\n    dedup: {key: '{{ headers.order }}', window: 1m}\n";
    let harness = start(yaml).await;
    let order = |id: &str, body: &str| {
        let mut message = Message::new(body.to_owned());
        message.headers.push("order", id);
        message
    };
    harness.queue("in").push(order("o-1", "first"));
    wait_for(&harness.queue("in"), "the first ack", |q| q.acked() == 1).await;
    // The same identity again (a redelivery): acknowledged, not forwarded.
    harness.queue("in").push(order("o-1", "again"));
    // No identity: never deduplicated.
    harness.queue("in").push(Message::new("anonymous"));
    harness.queue("in").push(Message::new("anonymous"));
    wait_for(&harness.queue("in"), "four acks", |q| q.acked() == 4).await;
    let bodies = |queue: &str| -> Vec<_> {
        harness
            .queue(queue)
            .messages()
            .into_iter()
            .map(|m| m.body)
            .collect()
    };
    assert_eq!(bodies("out"), ["first", "anonymous", "anonymous"]);
    // Sinks that deduplicate themselves (SQS FIFO) receive the identity.
    let identities: Vec<_> = harness
        .queue("out")
        .messages()
        .iter()
        .map(|m| m.dedup_identity().map(str::to_owned))
        .collect();
    assert_eq!(identities, [Some("r/o-1".to_owned()), None, None]);
    // Refused by the sink and by the dead letter: handed back to the source, so not
    // remembered, and forwarded when it comes back.
    harness
        .queue("out")
        .fail_next([SendError::permanent("refused")]);
    harness
        .queue("dlq")
        .fail_next([SendError::permanent("refused too")]);
    harness.queue("in").push(order("o-2", "second"));
    wait_for(&harness.queue("in"), "five acks", |q| q.acked() == 5).await;
    assert_eq!(harness.queue("in").retried(), 1);
    assert_eq!(bodies("out"), ["first", "anonymous", "anonymous", "second"]);
    assert!(harness.queue("dlq").is_empty());
    harness.stop().await;
}

#[tokio::test]
async fn a_message_over_a_limit_is_dead_lettered_with_the_limit_named() {
    let yaml = fan_out_yaml("    limits: {max_message_bytes: 64, max_headers: 3}\n");
    let harness = start(&yaml).await;
    harness.queue("in").push(Message::new("x".repeat(65)));
    let mut many = Message::new("small");
    for i in 0..4 {
        many.headers.push(format!("h{i}"), "v");
    }
    harness.queue("in").push(many);
    harness.queue("in").push(Message::new("fits"));
    wait_for(&harness.queue("in"), "three acks", |q| q.acked() == 3).await;
    let errors = dead_letter_errors(&harness);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains("limits.max_message_bytes"), "{errors:?}");
    assert!(errors[1].contains("limits.max_headers"), "{errors:?}");
    let delivered: Vec<_> = harness
        .queue("a")
        .messages()
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(delivered, ["fits"]);
    harness.stop().await;
}

#[tokio::test]
async fn a_message_value_cannot_reshape_a_templated_destination() {
    let yaml = "connections:\n  mem: {type: memory}\nroutes:\n  - name: r\n    from: mem:in\n    to: 'mem:out-{{ headers.region }}'\n    dead_letter: mem:dlq\n";
    let harness = start(yaml).await;
    for region in ["eu", "eu:0"] {
        let mut message = Message::new(region.to_owned());
        message.headers.push("region", region);
        harness.queue("in").push(message);
    }
    wait_for(&harness.queue("in"), "both acks", |q| q.acked() == 2).await;
    assert_eq!(harness.queue("out-eu").len(), 1);
    let errors = dead_letter_errors(&harness);
    assert_eq!(errors.len(), 1);
    assert!(errors[0].contains("path_values: any"), "{errors:?}");
    harness.stop().await;
}

#[tokio::test]
async fn a_reply_goes_only_where_reply_allow_lets_it() {
    let harness = start(RPC_YAML).await;
    // `mem:` queue names have no `/`, but `:` is not a plain name: refused by default.
    harness
        .queue("requests")
        .push(request("a1", "client:a", "corr-a1"));
    harness
        .queue("requests")
        .push(request("b1", "client-b", "corr-b1"));
    echo_replies(&harness, 2).await;
    wait_for(&harness.queue("client-b"), "the allowed reply", |q| {
        q.len() == 1
    })
    .await;
    wait_for(&harness.queue("dlq"), "the refused reply", |q| q.len() == 1).await;
    let errors = dead_letter_errors(&harness);
    assert!(
        errors[0].contains("not allowed by reply.allow"),
        "{errors:?}"
    );
    assert!(harness.queue("client:a").is_empty());
    harness.stop().await;

    let listed = RPC_YAML.replace("timeout: 2s", "timeout: 2s, allow: ['client:*']");
    let harness = start(&listed).await;
    harness
        .queue("requests")
        .push(request("a1", "client:a", "corr-a1"));
    harness
        .queue("requests")
        .push(request("b1", "client-b", "corr-b1"));
    echo_replies(&harness, 2).await;
    wait_for(&harness.queue("client:a"), "the listed reply", |q| {
        q.len() == 1
    })
    .await;
    wait_for(&harness.queue("dlq"), "the unlisted reply", |q| {
        q.len() == 1
    })
    .await;
    assert!(
        harness.queue("client-b").is_empty(),
        "`default` was not listed"
    );
    harness.stop().await;
}

#[tokio::test]
async fn a_token_minted_by_one_route_is_refused_by_another() {
    let yaml = "settings: {reply_signing_key: 'a-test-key-of-16+bytes'}\nconnections:\n  mem: {type: memory}\nroutes:\n  - name: one\n    from: mem:requests\n    to: mem:forwarded\n    reply: {from: mem:replies, timeout: 2s}\n    dead_letter: mem:dlq\n  - name: two\n    from: mem:requests-two\n    to: mem:forwarded-two\n    reply: {from: mem:replies-two, timeout: 2s}\n    dead_letter: mem:dlq-two\n";
    let harness = start(yaml).await;
    harness
        .queue("requests")
        .push(request("a1", "client-a", "corr-a1"));
    let forwarded = harness.queue("forwarded");
    wait_for(&forwarded, "the forwarded request", |q| q.len() == 1).await;
    // The replier answers route one's token on route two's reply queue.
    let mut reply = Message::new("answer");
    reply.correlation_id = forwarded.messages()[0].correlation_id.clone();
    harness.queue("replies-two").push(reply);
    wait_for(&harness.queue("dlq-two"), "the refused reply", |q| {
        q.len() == 1
    })
    .await;
    assert!(harness.queue("client-a").is_empty());
    harness.stop().await;
}

#[tokio::test]
async fn with_reply_dedup_a_replayed_token_is_relayed_once() {
    let harness = start(&RPC_YAML.replace("timeout: 2s", "timeout: 2s, dedup: {}")).await;
    harness
        .queue("requests")
        .push(request("a1", "client-a", "corr-a1"));
    let forwarded = harness.queue("forwarded");
    wait_for(&forwarded, "the forwarded request", |q| q.len() == 1).await;
    let token = forwarded.messages()[0].correlation_id.clone();
    for body in ["first", "replayed"] {
        let mut reply = Message::new(body);
        reply.correlation_id = token.clone();
        harness.queue("replies").push(reply);
    }
    wait_for(&harness.queue("replies"), "both replies settled", |q| {
        q.acked() == 2
    })
    .await;
    let relayed: Vec<_> = harness
        .queue("client-a")
        .messages()
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(relayed, ["first"]);
    assert!(harness.queue("dlq").is_empty());
    harness.stop().await;
}

//! Shaping on the in-process broker: transforms and their order, first match, rate limits
//! and their interaction with retries and dead letters.

use std::time::Duration;

use bridge::adapter::SendError;
use bridge::message::{Message, reserved};

use super::support::{start, wait_for};

fn route(body: &str) -> String {
    format!(
        "connections:\n  mem: {{type: memory}}\nroutes:\n  - name: r\n    from: mem:in\n    dead_letter: mem:dlq\n{body}"
    )
}

fn text<'m>(message: &'m Message, name: &str) -> Option<&'m str> {
    message.headers.get_text(name)
}

#[tokio::test]
async fn header_operations_apply_in_their_documented_order() {
    let yaml = route(
        r#"    to: mem:out
    transform:
      headers:
        rename: {X-Tenant: tenant}
        remove: ["x-internal-*", debug]
        keep: [tenant, "x-*", source, region, "origin-*"]
        copy_origin: true
        set:
          source: orders-service
          region: "{{ headers['X-Tenant'] }}-eu"
          tenant: ""
"#,
    );
    let harness = start(&yaml).await;
    let mut message = Message::new("m");
    for (name, value) in [
        ("X-Tenant", "acme"),
        ("x-internal-trace", "t"),
        ("x-public", "p"),
        ("debug", "1"),
        ("other", "dropped by keep"),
        (reserved::HOPS, "1"),
    ] {
        message.headers.push(name, value);
    }
    harness.queue("in").push(message);
    wait_for(&harness.queue("in"), "the ack", |q| q.acked() == 1).await;
    let out = &harness.queue("out").messages()[0];
    // Every expression reads the message as it came in: `region` sees `X-Tenant`, and the
    // empty `tenant` removes the renamed header.
    assert_eq!(text(out, "region"), Some("acme-eu"));
    assert_eq!(text(out, "tenant"), None);
    assert_eq!(text(out, "X-Tenant"), None);
    assert_eq!(text(out, "source"), Some("orders-service"));
    assert_eq!(text(out, "x-public"), Some("p"));
    assert_eq!(text(out, "x-internal-trace"), None);
    assert_eq!(text(out, "debug"), None);
    assert_eq!(text(out, "other"), None);
    assert_eq!(text(out, "origin-endpoint"), Some("mem:in"));
    assert_eq!(text(out, "origin-offset"), Some("0"));
    assert_eq!(
        text(out, reserved::HOPS),
        Some("2"),
        "bookkeeping survives `keep`"
    );
    harness.stop().await;
}

#[tokio::test]
async fn a_sink_transform_applies_after_the_routes_and_sees_its_result() {
    let yaml = route(
        r#"    transform:
      headers: {set: {stage: route}}
      key: "{{ body.customer }}"
    to:
      - endpoint: mem:a
        transform:
          headers: {set: {stage: "{{ headers.stage }}+sink", key_seen: "{{ key }}"}}
      - mem:b
"#,
    );
    let harness = start(&yaml).await;
    harness
        .queue("in")
        .push(Message::new(r#"{"customer": "c-1"}"#));
    wait_for(&harness.queue("in"), "the ack", |q| q.acked() == 1).await;
    let a = &harness.queue("a").messages()[0];
    assert_eq!(text(a, "stage"), Some("route+sink"));
    assert_eq!(text(a, "key_seen"), Some("c-1"));
    assert_eq!(a.key.as_deref(), Some(&b"c-1"[..]));
    let b = &harness.queue("b").messages()[0];
    assert_eq!(
        text(b, "stage"),
        Some("route"),
        "the other sink has only the route's"
    );
    harness.stop().await;
}

#[tokio::test]
async fn jq_projects_the_body_and_envelope_fields_come_from_templates() {
    let yaml = route(
        r#"    to: mem:out
    transform:
      body: {jq: "{id: .order.id, total: (.items | map(.price) | add)}"}
      correlation_id: "{{ body.order.id }}"
      message_id: "m-{{ body.order.id }}"
      reply_to: ""
"#,
    );
    let harness = start(&yaml).await;
    let mut message =
        Message::new(r#"{"order": {"id": "o-9"}, "items": [{"price": 2}, {"price": 5}]}"#);
    message.reply_to = Some("replies".into());
    message.content_type = Some("application/vnd.order+json".into());
    harness.queue("in").push(message);
    wait_for(&harness.queue("in"), "the ack", |q| q.acked() == 1).await;
    let out = &harness.queue("out").messages()[0];
    assert_eq!(out.body, r#"{"id":"o-9","total":7}"#);
    assert_eq!(out.content_type.as_deref(), Some("application/json"));
    assert_eq!(out.correlation_id.as_deref(), Some("o-9"));
    assert_eq!(out.message_id.as_deref(), Some("m-o-9"));
    assert_eq!(out.reply_to, None, "an empty rendering removes the field");
    harness.stop().await;
}

#[tokio::test]
async fn a_transform_failing_on_one_message_dead_letters_it_as_received() {
    let yaml = route(
        r#"    to: mem:out
    transform:
      headers: {set: {changed: "yes"}}
      body: {jq: ".order.id"}
"#,
    );
    let harness = start(&yaml).await;
    let mut bad = Message::new("not json");
    bad.headers.push("app", "kept");
    harness.queue("in").push(bad);
    harness
        .queue("in")
        .push(Message::new(r#"{"order": {"id": 3}}"#));
    wait_for(&harness.queue("in"), "two acks", |q| q.acked() == 2).await;
    let letter = &harness.queue("dlq").messages()[0];
    assert_eq!(letter.body, "not json", "the body as received");
    assert_eq!(text(letter, "app"), Some("kept"));
    assert_eq!(text(letter, "changed"), None, "no transform applied");
    assert!(
        text(letter, reserved::DLQ_ERROR)
            .unwrap()
            .contains("not JSON")
    );
    assert_eq!(text(letter, reserved::DLQ_SINK), Some("route transform"));
    assert_eq!(harness.queue("out").messages()[0].body, "3");
    harness.stop().await;
}

#[tokio::test]
async fn a_hostile_message_cannot_blow_up_a_jq_projection() {
    let yaml = route(
        "    to: mem:out\n    transform:\n      body: {jq: \"[.items[] | .name]\"}\n    limits: {max_message_bytes: 4096}\n",
    );
    let harness = start(&yaml).await;
    // Deeper than any JSON reading accepts, then a result larger than the route's limit.
    let deep = format!("{}{}", "[".repeat(3000), "]".repeat(3000));
    harness.queue("in").push(Message::new(deep));
    let names: Vec<String> = (0..200)
        .map(|i| format!(r#"{{"name": "{i:0>20}"}}"#))
        .collect();
    let wide = format!(r#"{{"items": [{}]}}"#, names.join(","));
    assert!(wide.len() < 8192);
    harness.queue("in").push(Message::new(wide));
    wait_for(&harness.queue("in"), "two acks", |q| q.acked() == 2).await;
    let errors: Vec<String> = harness
        .queue("dlq")
        .messages()
        .iter()
        .map(|m| text(m, reserved::DLQ_ERROR).unwrap().to_owned())
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(harness.queue("out").is_empty());
    harness.stop().await;
}

#[tokio::test]
async fn first_match_sends_to_the_first_sink_whose_condition_holds_else_the_default() {
    let yaml = route(
        r#"    select: first
    to:
      - {endpoint: mem:big, when: "body.amount > 100"}
      - {endpoint: mem:eu, when: "headers.region == 'eu'"}
      - mem:default
"#,
    );
    let harness = start(&yaml).await;
    let mut big_eu = Message::new(r#"{"amount": 500}"#);
    big_eu.headers.push("region", "eu");
    let mut small_eu = Message::new(r#"{"amount": 5}"#);
    small_eu.headers.push("region", "eu");
    for message in [big_eu, small_eu, Message::new(r#"{"amount": 1}"#)] {
        harness.queue("in").push(message);
    }
    wait_for(&harness.queue("in"), "three acks", |q| q.acked() == 3).await;
    assert_eq!(harness.queue("big").len(), 1);
    assert_eq!(
        harness.queue("eu").len(),
        1,
        "the big one went to `big` only"
    );
    assert_eq!(harness.queue("default").len(), 1);
    harness.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_route_rate_limit_paces_the_source_and_drops_nothing() {
    let yaml = route("    to: mem:out\n    rate: {messages: 10, per: 1s, burst: 1}\n");
    let harness = start(&yaml).await;
    let started = tokio::time::Instant::now();
    for i in 0..21 {
        harness.queue("in").push(Message::new(format!("{i}")));
    }
    wait_for(&harness.queue("in"), "every ack", |q| q.acked() == 21).await;
    let elapsed = started.elapsed();
    // One at once, then one every 100ms.
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_millis(2100),
        "{elapsed:?}"
    );
    assert_eq!(harness.queue("out").len(), 21);
    harness.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_sink_rate_limit_counts_every_attempt_and_retries_still_dead_letter() {
    let yaml = route(
        "    to:\n      - {endpoint: mem:slow, rate: {messages: 2, per: 1s, burst: 1}}\n      - mem:fast\n    retry: {max_attempts: 3, initial_backoff: 1ms, max_backoff: 1ms}\n",
    );
    let harness = start(&yaml).await;
    let failures_left = std::sync::atomic::AtomicUsize::new(2);
    harness.queue("slow").fail_when(move |m| {
        if m.body == "doomed" {
            return Some(SendError::permanent("refused"));
        }
        let left = failures_left.load(std::sync::atomic::Ordering::SeqCst);
        (left > 0).then(|| {
            failures_left.store(left - 1, std::sync::atomic::Ordering::SeqCst);
            SendError::transient("busy")
        })
    });
    let started = tokio::time::Instant::now();
    harness.queue("in").push(Message::new("ok"));
    harness.queue("in").push(Message::new("doomed"));
    wait_for(&harness.queue("in"), "both acks", |q| q.acked() == 2).await;
    // Three attempts for `ok` and one for `doomed`, at 2 a second: 1.5s at least.
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(harness.queue("slow").len(), 1);
    assert_eq!(
        harness.queue("fast").len(),
        2,
        "the other sink is not held to the rate"
    );
    let letter = &harness.queue("dlq").messages()[0];
    assert_eq!(letter.body, "doomed");
    harness.stop().await;
}

#[tokio::test]
async fn origin_fields_are_variables_of_conditions_and_templates() {
    let yaml = route(
        r#"    when: "origin.endpoint == 'mem:in' && origin.offset >= 0"
    to: mem:out
    transform:
      headers: {set: {from: "{{ origin.endpoint }}@{{ origin.offset }}"}}
"#,
    );
    let harness = start(&yaml).await;
    harness.queue("in").push(Message::new("m"));
    wait_for(&harness.queue("in"), "the ack", |q| q.acked() == 1).await;
    assert_eq!(
        text(&harness.queue("out").messages()[0], "from"),
        Some("mem:in@0")
    );
    harness.stop().await;
}

#[tokio::test]
async fn an_ordering_key_template_orders_keyless_messages_despite_retries() {
    let yaml = route(
        "    to: mem:out\n    ordering: key\n    ordering_key: \"{{ headers.customer }}\"\n    max_in_flight: 8\n    retry: {max_attempts: 10, initial_backoff: 1ms, max_backoff: 5ms}\n",
    );
    let harness = start(&yaml).await;
    let out = harness.queue("out");
    let tried = std::sync::Mutex::new(std::collections::HashSet::new());
    // Every third message fails on its first attempt, forcing retries mid-stream.
    out.fail_when(move |message| {
        let number: u32 = std::str::from_utf8(&message.body)
            .unwrap()
            .split('-')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let first = tried.lock().unwrap().insert(number);
        (number.is_multiple_of(3) && first).then(|| SendError::transient("flaky"))
    });
    for n in 0..200 {
        let customer = format!("c{}", n % 8);
        let mut message = Message::new(format!("{customer}-{n}"));
        message.headers.push("customer", customer.as_str());
        harness.queue("in").push(message);
    }
    wait_for(&harness.queue("in"), "every ack", |q| q.acked() == 200).await;
    let mut last = std::collections::HashMap::new();
    for message in out.messages() {
        let body = String::from_utf8(message.body.to_vec()).unwrap();
        let (customer, number) = body.split_once('-').unwrap();
        let number: u32 = number.parse().unwrap();
        if let Some(previous) = last.insert(customer.to_owned(), number) {
            assert!(previous < number, "{customer}: {number} after {previous}");
        }
    }
    assert_eq!(out.len(), 200);
    harness.stop().await;
}

//! Routes files: every broken fixture fails with exactly its expected errors (each with its
//! line), every valid one and routes.example.yaml pass. Fixtures state their expectations
//! in `# expect: TEXT` lines at the top.

use std::path::{Path, PathBuf};

use bridge::config;

fn no_env(_: &str) -> Option<String> {
    None
}

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(kind);
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn each_broken_fixture_reports_exactly_its_expected_errors() {
    let files = fixtures("invalid");
    assert!(files.len() >= 7, "the corpus of broken files is present");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let expected: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(
            !expected.is_empty(),
            "{} states no expectation",
            file.display()
        );
        let errors = match config::load_str(&text, "f.yaml", &no_env) {
            Ok(_) => panic!("{} was accepted", file.display()),
            Err(errors) => errors,
        };
        let report = errors.to_string();
        for want in &expected {
            assert!(
                report.contains(want),
                "{}: missing `{want}` in:\n{report}",
                file.display()
            );
        }
        assert_eq!(
            errors.errors.len(),
            expected.len(),
            "{}: unexpected errors in:\n{report}",
            file.display()
        );
        assert!(
            errors.errors.iter().all(|e| e.line.is_some()),
            "{}: every error has a line:\n{report}",
            file.display()
        );
    }
}

#[test]
fn valid_fixtures_and_the_example_file_are_accepted() {
    let mut files = fixtures("valid");
    files.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("routes.example.yaml"));
    for file in files {
        if let Err(errors) = config::load_file(&file, &no_env) {
            panic!("{errors}");
        }
    }
}

#[test]
fn example_file_has_fan_out_filter_and_dead_letters_across_systems() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("routes.example.yaml");
    let plan = config::load_file(&file, &no_env).unwrap();
    let systems: Vec<_> = plan.connections.values().map(|c| c.type_name()).collect();
    for system in ["kafka", "rabbitmq", "aws", "pubsub"] {
        assert!(systems.contains(&system), "{system} is in the example");
    }
    assert!(
        plan.routes.iter().any(|r| r.sinks.len() > 1),
        "a fan-out route"
    );
    assert!(
        plan.routes.iter().any(|r| r.when.is_some()),
        "a filtered route"
    );
    assert!(
        plan.routes.iter().all(|r| r.dead_letter.is_some()),
        "dead letters everywhere"
    );
}

#[test]
fn environment_variables_and_secret_files_are_interpolated() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("password");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let text = format!(
        "connections:\n  rabbit: {{type: rabbitmq, url: 'amqp://${{RABBIT_USER:-guest}}:${{file:{}}}@${{HOST}}:5672/%2f'}}\n",
        secret.display()
    );
    let env = |name: &str| (name == "HOST").then(|| "broker.internal".to_owned());
    let plan = config::load_str(&text, "f.yaml", &env).unwrap();
    let description = plan.connections["rabbit"].describe();
    assert_eq!(description, "RabbitMQ at broker.internal:5672");
    assert!(!format!("{:?}", plan.connections["rabbit"]).is_empty());
}

#[test]
fn interpolated_numbers_and_numeric_option_values_take_the_expected_type() {
    let text = "settings: {max_hops: '${HOPS}'}\nconnections:\n  kafka: {type: kafka, brokers: 'h:1', options: {linger.ms: 10, enable.idempotence: true}}\n";
    let env = |name: &str| (name == "HOPS").then(|| "7".to_owned());
    let plan = config::load_str(text, "f.yaml", &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.settings.max_hops, 7);
    let not_a_number = config::load_str(text, "f.yaml", &|name: &str| {
        (name == "HOPS").then(|| "many".to_owned())
    });
    assert!(
        not_a_number
            .unwrap_err()
            .to_string()
            .contains("settings.max_hops")
    );
}

#[test]
fn debug_of_a_plan_never_shows_a_secret() {
    let text = "settings: {reply_signing_key: 'Dbg-signing-key-canary'}\n\
        connections:\n\
        \x20 rabbit: {type: rabbitmq, url: 'amqp://u:Dbg%2Fpw-canary@h/%2f'}\n\
        \x20 kafka:\n\
        \x20   type: kafka\n\
        \x20   brokers: h:9092\n\
        \x20   sasl: {mechanism: PLAIN, username: u, password: Dbg-sasl-canary}\n\
        \x20   options: {ssl.key.password: Dbg-key-canary}\n\
        \x20 aws: {type: aws, region: eu-west-1, access_key_id: a, secret_access_key: Dbg-aws-canary}\n\
        routes:\n\
        \x20 - name: r\n\
        \x20   from: rabbit:queue/q\n\
        \x20   to: kafka:t\n\
        \x20   dead_letter: rabbit:queue/dlq\n\
        \x20   dedup: {store: 'redis://:Dbg-redis-canary@h:6379/0'}\n\
        \x20   reply: {from: kafka:replies}\n";
    let plan = config::load_str(text, "f.yaml", &no_env).unwrap();
    let shown = format!("{plan:?}");
    assert!(shown.contains("rabbit"), "the plan is shown");
    for secret in [
        "Dbg%2Fpw",
        "Dbg/pw",
        "Dbg-signing",
        "Dbg-sasl",
        "Dbg-key",
        "Dbg-aws",
        "Dbg-redis",
    ] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
}

#[test]
fn ordering_by_key_on_a_source_without_keys_is_a_warning_unless_a_template_gives_one() {
    let file = |ordering_key: &str| {
        format!(
            "connections:\n  rabbit: {{type: rabbitmq, url: 'amqp://127.0.0.1:5672/%2f'}}\n  kafka: {{type: kafka, brokers: '127.0.0.1:9092'}}\nroutes:\n  - name: r\n    from: rabbit:queue/orders\n    to: kafka:orders\n    dead_letter: kafka:dead\n    ordering: key\n{ordering_key}"
        )
    };
    let plan = bridge::config::load_str(&file(""), "routes.yaml", &|_: &str| None).unwrap();
    assert_eq!(plan.warnings.len(), 1);
    assert!(
        plan.warnings[0].message.contains("delivers no keys"),
        "{:?}",
        plan.warnings
    );
    assert_eq!(plan.warnings[0].line, Some(9), "the line of `ordering`");
    let plan = bridge::config::load_str(
        &file("    ordering_key: \"{{ headers.customer }}\"\n"),
        "routes.yaml",
        &|_: &str| None,
    )
    .unwrap();
    assert!(plan.warnings.is_empty());
    let errors = bridge::config::load_str(
        "connections:\n  mem: {type: memory}\nroutes:\n  - name: r\n    from: mem:in\n    to: mem:out\n    ordering_key: x\n",
        "routes.yaml",
        &|_: &str| None,
    )
    .unwrap_err();
    assert!(
        errors
            .to_string()
            .contains("ordering_key needs `ordering: key`"),
        "{errors}"
    );
}

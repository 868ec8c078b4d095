use super::*;
use crate::config::model::{BodyModel, TransformModel};
use crate::message::Message;

fn compile_errors(model: TransformModel) -> Vec<(String, String)> {
    Transform::compile(&model).unwrap_err()
}

#[test]
fn every_bad_part_is_reported_with_its_field() {
    let mut model = TransformModel::default();
    model.headers.set.insert("bridge-hops".into(), "0".into());
    model.headers.set.insert("ok".into(), "{{ nope(".into());
    model.headers.rename.insert("a".into(), "bridge-x".into());
    model.headers.remove.push(String::new());
    model.key = Some("{{ unknown_variable }}".into());
    model.body = Some(BodyModel {
        jq: Some(".".into()),
        template: Some("x".into()),
    });
    let fields: Vec<String> = compile_errors(model).into_iter().map(|(f, _)| f).collect();
    for expected in [
        "headers.set.bridge-hops",
        "headers.set.ok",
        "headers.rename.a",
        "headers.remove[0]",
        "key",
        "body",
    ] {
        assert!(
            fields.iter().any(|f| f == expected),
            "{expected} in {fields:?}"
        );
    }
}

#[test]
fn a_refused_jq_program_is_an_error_of_body_jq() {
    let model = TransformModel {
        body: Some(BodyModel {
            jq: Some("[range(.n)]".into()),
            template: None,
        }),
        ..TransformModel::default()
    };
    let errors = compile_errors(model);
    assert_eq!(errors[0].0, "body.jq");
    assert!(
        errors[0].1.contains("`range/1` is not allowed"),
        "{}",
        errors[0].1
    );
}

#[test]
fn a_template_body_keeps_the_content_type_and_renders_text() {
    let model = TransformModel {
        body: Some(BodyModel {
            jq: None,
            template: Some("hello {{ body.name }}".into()),
        }),
        ..TransformModel::default()
    };
    let transform = Transform::compile(&model).unwrap();
    let mut message = Message::new(r#"{"name": "ada"}"#);
    message.content_type = Some("text/plain".into());
    let out = transform.apply(&Scope::new(&message), 1_000).unwrap();
    assert_eq!(out.body, "hello ada");
    assert_eq!(out.content_type.as_deref(), Some("text/plain"));
}

#[test]
fn rename_replaces_headers_already_called_the_new_name() {
    let mut model = TransformModel::default();
    model
        .headers
        .rename
        .insert("X-Tenant".into(), "tenant".into());
    let transform = Transform::compile(&model).unwrap();
    let mut message = Message::new("m");
    message.headers.push("tenant", "old");
    message.headers.push("X-Tenant", "new");
    let out = transform.apply(&Scope::new(&message), 1_000).unwrap();
    let headers: Vec<(&str, Option<&str>)> = out
        .headers
        .iter()
        .map(|(name, value)| (name, value.as_text()))
        .collect();
    assert_eq!(headers, [("tenant", Some("new"))]);
}

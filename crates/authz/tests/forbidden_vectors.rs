//! spec/vectors/kubernetes.md §V4.1 (TestForbidden) and the 403 bodies of §V4.3 / messages of §4.2.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kubegate_authz::{Attributes, Identity, forbidden};

#[test]
fn test_forbidden() {
    let user = Identity::new("NAME", vec![]);
    let cases: Vec<(&str, Attributes<'_>, &str)> = vec![
        (
            "non-resource GET /whatever",
            Attributes::non_resource(&user, "GET", "/whatever"),
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"forbidden: User \\\"NAME\\\" cannot GET path \\\"/whatever\\\"\",\"reason\":\"Forbidden\",\"details\":{},\"code\":403}\n",
        ),
        (
            "non-resource GET /<script>",
            Attributes::non_resource(&user, "GET", "/<script>"),
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"forbidden: User \\\"NAME\\\" cannot GET path \\\"/\\u0026lt;script\\u0026gt;\\\"\",\"reason\":\"Forbidden\",\"details\":{},\"code\":403}\n",
        ),
        (
            "resource get pod cluster scope",
            Attributes::resource(&user, "get", "", "pod"),
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"pod is forbidden: User \\\"NAME\\\" cannot get resource \\\"pod\\\" in API group \\\"\\\" at the cluster scope\",\"reason\":\"Forbidden\",\"details\":{\"kind\":\"pod\"},\"code\":403}\n",
        ),
        (
            "resource get pod mypod",
            Attributes::resource(&user, "get", "", "pod").named("mypod"),
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"pod \\\"mypod\\\" is forbidden: User \\\"NAME\\\" cannot get resource \\\"pod\\\" in API group \\\"\\\" at the cluster scope\",\"reason\":\"Forbidden\",\"details\":{\"name\":\"mypod\",\"kind\":\"pod\"},\"code\":403}\n",
        ),
        (
            "resource get pod/quota in v2, namespace test",
            Attributes::resource(&user, "get", "v2", "pod")
                .on_subresource("quota")
                .in_namespace("test"),
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"pod.v2 is forbidden: User \\\"NAME\\\" cannot get resource \\\"pod/quota\\\" in API group \\\"v2\\\" in the namespace \\\"test\\\"\",\"reason\":\"Forbidden\",\"details\":{\"group\":\"v2\",\"kind\":\"pod\"},\"code\":403}\n",
        ),
    ];
    for (name, attributes, body) in cases {
        assert_eq!(forbidden(&attributes, "").status_json(), body, "{name}");
    }
}

#[test]
fn other_403_bodies() {
    let anonymous = Identity::anonymous();
    let jane = Identity::new("jane", vec![]);
    for (name, attributes, body) in [
        (
            "list pods as anonymous in default",
            Attributes::resource(&anonymous, "list", "", "pods").in_namespace("default"),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods is forbidden: User \"system:anonymous\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\"","reason":"Forbidden","details":{"kind":"pods"},"code":403}
"#,
        ),
        (
            "cluster-scoped group resource",
            Attributes::resource(&jane, "list", "apps", "deployments"),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"deployments.apps is forbidden: User \"jane\" cannot list resource \"deployments\" in API group \"apps\" at the cluster scope","reason":"Forbidden","details":{"group":"apps","kind":"deployments"},"code":403}
"#,
        ),
        (
            "non-resource (real lowercase verb)",
            Attributes::non_resource(&jane, "get", "/metrics"),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"forbidden: User \"jane\" cannot get path \"/metrics\"","reason":"Forbidden","details":{},"code":403}
"#,
        ),
    ] {
        assert_eq!(forbidden(&attributes, "").status_json(), body, "{name}");
    }
}

#[test]
fn messages_of_section_4_2() {
    let x = Identity::new("x", vec![]);
    for (attributes, reason, message) in [
        (
            Attributes::resource(&x, "list", "", "pods").in_namespace("default"),
            "",
            r#"pods is forbidden: User "x" cannot list resource "pods" in API group "" in the namespace "default""#,
        ),
        (
            Attributes::resource(&x, "create", "", "pods")
                .on_subresource("exec")
                .named("p1")
                .in_namespace("default"),
            "",
            r#"pods "p1" is forbidden: User "x" cannot create resource "pods/exec" in API group "" in the namespace "default""#,
        ),
        (
            Attributes::resource(&x, "list", "apps", "deployments"),
            "",
            r#"deployments.apps is forbidden: User "x" cannot list resource "deployments" in API group "apps" at the cluster scope"#,
        ),
        (
            Attributes::non_resource(&x, "get", "/logs"),
            "",
            r#"forbidden: User "x" cannot get path "/logs""#,
        ),
        (
            // The reason is appended unsanitised.
            Attributes::resource(&x, "get", "", "secrets").in_namespace("a<b"),
            "RBAC: <why>",
            r#"secrets is forbidden: User "x" cannot get resource "secrets" in API group "" in the namespace "a&lt;b": RBAC: <why>"#,
        ),
    ] {
        assert_eq!(forbidden(&attributes, reason).message, message);
    }
}

#[test]
fn names_are_go_quoted() {
    let odd = Identity::new("we\"ird\n", vec![]);
    let f = forbidden(
        &Attributes::resource(&odd, "get", "", "pods").named("a\"b"),
        "",
    );
    assert_eq!(
        f.message,
        r#"pods "a\"b" is forbidden: User "we\"ird\n" cannot get resource "pods" in API group "" at the cluster scope"#
    );
}

/// spec/kubernetes-edges.md §2.4: the extra `create` check of pod exec/attach/portforward
/// reports the authorizer's raw reason, with no `User … cannot …` sentence.
#[test]
fn pod_streaming_create_check_messages() {
    let jane = Identity::new("jane", vec![]);
    let create = Attributes::resource(&jane, "create", "", "pods")
        .on_subresource("exec")
        .in_namespace("default")
        .named("p1");
    let rbac = kubegate_authz::forbidden_reason_only(&create, "");
    assert_eq!(rbac.message, r#"pods "p1" is forbidden: "#);
    assert_eq!((rbac.name.as_str(), rbac.kind.as_str()), ("p1", "pods"));
    let gate = kubegate_authz::forbidden_reason_only(&create, "the gateway is read-only");
    assert_eq!(
        gate.message,
        r#"pods "p1" is forbidden: the gateway is read-only"#
    );
}

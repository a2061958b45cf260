//! spec/vectors/kubernetes.md §V3.1 (TestImpersonationFilter) and §V3.4 (extra-key escaping).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use kubegate_authz::{
    Attributes, Authorizer, Decision, Identity, ImpersonationRequest, impersonate,
};

/// Upstream `impersonateAuthorizer`, rule for rule.
struct ImpersonateAuthorizer;

impl Authorizer for ImpersonateAuthorizer {
    fn authorize<'s>(&'s self, a: &Attributes<'_>) -> Decision<'s> {
        let user = a.user;
        let group = |i: usize| user.groups.get(i).map(String::as_str);
        let imp = a.verb == "impersonate";
        if user.name == "system:admin" {
            return Decision::allow("");
        }
        if user.name == "tester" {
            return Decision::no_opinion("").with_error("works on my machine");
        }
        if user.name == "deny-me" {
            return Decision::no_opinion("denied");
        }
        if group(0) == Some("wheel") && imp && a.resource == "users" {
            return Decision::allow("");
        }
        if group(0) == Some("sa-impersonater") && imp && a.resource == "serviceaccounts" {
            return Decision::allow("");
        }
        if group(0) == Some("regular-impersonater") && imp && a.resource == "users" {
            return Decision::allow("");
        }
        if group(1) == Some("group-impersonater") && imp && a.resource == "groups" {
            return Decision::allow("");
        }
        if group(1) == Some("extra-setter-scopes")
            && imp
            && a.resource == "userextras"
            && a.subresource == "scopes"
        {
            return Decision::allow("");
        }
        if matches!(group(1), Some("escaped-scopes" | "almost-escaped-scopes")) {
            return Decision::allow("");
        }
        if group(1) == Some("extra-setter-particular-scopes")
            && imp
            && a.resource == "userextras"
            && a.subresource == "scopes"
            && a.name == "scope-a"
            && a.api_group == "authentication.k8s.io"
        {
            return Decision::allow("");
        }
        if group(1) == Some("extra-setter-project")
            && imp
            && a.resource == "userextras"
            && a.subresource == "project"
            && a.api_group == "authentication.k8s.io"
        {
            return Decision::allow("");
        }
        if group(0) == Some("everything-impersonater")
            && imp
            && ((a.resource == "users" && a.api_group.is_empty())
                || (a.resource == "uids"
                    && a.name == "some-uid"
                    && a.api_group == "authentication.k8s.io")
                || (a.resource == "groups" && a.api_group.is_empty())
                || (a.resource == "userextras"
                    && a.subresource == "scopes"
                    && a.api_group == "authentication.k8s.io"))
        {
            return Decision::allow("");
        }
        Decision::no_opinion("deny by default")
    }
}

type Extra = &'static [(&'static str, &'static [&'static str])];

struct Case {
    name: &'static str,
    requestor: (&'static str, &'static [&'static str]),
    user: &'static str,
    groups: &'static [&'static str],
    extra: Extra,
    uid: &'static str,
    code: u16,
    /// (name, groups, extra, uid) seen by the handler.
    expected: (&'static str, &'static [&'static str], Extra, &'static str),
}

const NONE: &[&str] = &[];
const NO_EXTRA: &[(&str, &[&str])] = &[];
const AUTH: &[&str] = &["system:authenticated"];

#[rustfmt::skip]
const CASES: &[Case] = &[
    Case { name: "not-impersonating", requestor: ("tester", NONE), user: "", groups: NONE, extra: NO_EXTRA, uid: "", code: 200, expected: ("tester", NONE, NO_EXTRA, "") },
    Case { name: "impersonating-error", requestor: ("tester", NONE), user: "anyone", groups: NONE, extra: NO_EXTRA, uid: "", code: 403, expected: ("tester", NONE, NO_EXTRA, "") },
    Case { name: "impersonating-group-without-user", requestor: ("tester", NONE), user: "", groups: &["some-group"], extra: NO_EXTRA, uid: "", code: 400, expected: ("tester", NONE, NO_EXTRA, "") },
    Case { name: "impersonating-extra-without-user", requestor: ("tester", NONE), user: "", groups: NONE, extra: &[("scopes", &["scope-a"])], uid: "", code: 400, expected: ("tester", NONE, NO_EXTRA, "") },
    Case { name: "impersonating-uid-without-user", requestor: ("tester", NONE), user: "", groups: NONE, extra: NO_EXTRA, uid: "some-uid", code: 400, expected: ("tester", NONE, NO_EXTRA, "") },
    Case { name: "disallowed-group", requestor: ("dev", &["wheel"]), user: "system:admin", groups: &["some-group"], extra: NO_EXTRA, uid: "", code: 403, expected: ("dev", &["wheel"], NO_EXTRA, "") },
    Case { name: "allowed-group", requestor: ("dev", &["wheel", "group-impersonater"]), user: "system:admin", groups: &["some-group"], extra: NO_EXTRA, uid: "", code: 200, expected: ("system:admin", &["some-group", "system:authenticated"], NO_EXTRA, "") },
    Case { name: "disallowed-userextra-1", requestor: ("dev", &["wheel"]), user: "system:admin", groups: &["some-group"], extra: &[("scopes", &["scope-a"])], uid: "", code: 403, expected: ("dev", &["wheel"], NO_EXTRA, "") },
    Case { name: "disallowed-userextra-2", requestor: ("dev", &["wheel", "extra-setter-project"]), user: "system:admin", groups: &["some-group"], extra: &[("scopes", &["scope-a"])], uid: "", code: 403, expected: ("dev", &["wheel", "extra-setter-project"], NO_EXTRA, "") },
    Case { name: "disallowed-userextra-3", requestor: ("dev", &["wheel", "extra-setter-particular-scopes"]), user: "system:admin", groups: &["some-group"], extra: &[("scopes", &["scope-a", "scope-b"])], uid: "", code: 403, expected: ("dev", &["wheel", "extra-setter-particular-scopes"], NO_EXTRA, "") },
    Case { name: "allowed-userextras", requestor: ("dev", &["wheel", "extra-setter-scopes"]), user: "system:admin", groups: NONE, extra: &[("scopes", &["scope-a", "scope-b"])], uid: "", code: 200, expected: ("system:admin", AUTH, &[("scopes", &["scope-a", "scope-b"])], "") },
    Case { name: "percent-escaped-userextras", requestor: ("dev", &["wheel", "escaped-scopes"]), user: "system:admin", groups: NONE, extra: &[("example.com%2fescaped%e1%9b%84scopes", &["scope-a", "scope-b"])], uid: "", code: 200, expected: ("system:admin", AUTH, &[("example.com/escapedᛄscopes", &["scope-a", "scope-b"])], "") },
    Case { name: "almost-percent-escaped-userextras", requestor: ("dev", &["wheel", "almost-escaped-scopes"]), user: "system:admin", groups: NONE, extra: &[("almost%zzpercent%xxencoded", &["scope-a", "scope-b"])], uid: "", code: 200, expected: ("system:admin", AUTH, &[("almost%zzpercent%xxencoded", &["scope-a", "scope-b"])], "") },
    Case { name: "allowed-users-impersonation", requestor: ("dev", &["regular-impersonater"]), user: "tester", groups: NONE, extra: NO_EXTRA, uid: "", code: 200, expected: ("tester", AUTH, NO_EXTRA, "") },
    Case { name: "disallowed-impersonating", requestor: ("dev", &["sa-impersonater"]), user: "tester", groups: NONE, extra: NO_EXTRA, uid: "", code: 403, expected: ("dev", &["sa-impersonater"], NO_EXTRA, "") },
    Case { name: "allowed-sa-impersonating", requestor: ("dev", &["sa-impersonater"]), user: "system:serviceaccount:foo:default", groups: NONE, extra: NO_EXTRA, uid: "", code: 200, expected: ("system:serviceaccount:foo:default", &["system:serviceaccounts", "system:serviceaccounts:foo", "system:authenticated"], NO_EXTRA, "") },
    Case { name: "anonymous-username-prevents-adding-authenticated-group", requestor: ("system:admin", NONE), user: "system:anonymous", groups: NONE, extra: NO_EXTRA, uid: "", code: 200, expected: ("system:anonymous", &["system:unauthenticated"], NO_EXTRA, "") },
    Case { name: "unauthenticated-group-prevents-adding-authenticated-group", requestor: ("system:admin", NONE), user: "unknown", groups: &["system:unauthenticated"], extra: NO_EXTRA, uid: "", code: 200, expected: ("unknown", &["system:unauthenticated"], NO_EXTRA, "") },
    Case { name: "unauthenticated-group-prevents-double-adding-authenticated-group", requestor: ("system:admin", NONE), user: "unknown", groups: &["system:authenticated"], extra: NO_EXTRA, uid: "", code: 200, expected: ("unknown", &["system:authenticated"], NO_EXTRA, "") },
    Case { name: "specified-authenticated-group-prevents-double-adding-authenticated-group", requestor: ("dev", &["wheel", "group-impersonater"]), user: "system:admin", groups: &["some-group", "system:authenticated"], extra: NO_EXTRA, uid: "", code: 200, expected: ("system:admin", &["some-group", "system:authenticated"], NO_EXTRA, "") },
    Case { name: "anonymous-user-should-include-unauthenticated-group", requestor: ("system:admin", NONE), user: "system:anonymous", groups: NONE, extra: NO_EXTRA, uid: "", code: 200, expected: ("system:anonymous", &["system:unauthenticated"], NO_EXTRA, "") },
    Case { name: "anonymous-user-prevents-double-adding-unauthenticated-group", requestor: ("system:admin", NONE), user: "system:anonymous", groups: &["system:unauthenticated"], extra: NO_EXTRA, uid: "", code: 200, expected: ("system:anonymous", &["system:unauthenticated"], NO_EXTRA, "") },
    Case { name: "allowed-user-impersonation-with-uid", requestor: ("dev", &["everything-impersonater"]), user: "tester", groups: NONE, extra: NO_EXTRA, uid: "some-uid", code: 200, expected: ("tester", AUTH, NO_EXTRA, "some-uid") },
    Case { name: "disallowed-user-impersonation-with-uid", requestor: ("dev", &["everything-impersonater"]), user: "tester", groups: NONE, extra: NO_EXTRA, uid: "disallowed-uid", code: 403, expected: ("dev", &["everything-impersonater"], NO_EXTRA, "") },
    Case { name: "allowed-impersonation-with-all-headers", requestor: ("dev", &["everything-impersonater"]), user: "tester", groups: &["system:authenticated"], extra: &[("scopes", &["scope-a", "scope-b"])], uid: "some-uid", code: 200, expected: ("tester", AUTH, &[("scopes", &["scope-a", "scope-b"])], "some-uid") },
];

fn owned(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn test_impersonation_filter() {
    for case in CASES {
        // Header names as a Go server would have them (canonical case), one pair per line.
        let mut headers: Vec<(String, String)> = Vec::new();
        if !case.user.is_empty() {
            headers.push(("Impersonate-User".into(), case.user.into()));
        }
        for g in case.groups {
            headers.push(("Impersonate-Group".into(), (*g).into()));
        }
        for (key, values) in case.extra {
            for v in *values {
                headers.push((format!("Impersonate-Extra-{key}"), (*v).into()));
            }
        }
        if !case.uid.is_empty() {
            headers.push(("Impersonate-Uid".into(), case.uid.into()));
        }
        let request = ImpersonationRequest::from_headers(
            headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        );
        let requestor = Identity::new(case.requestor.0, owned(case.requestor.1));
        let (code, seen) = match impersonate(&requestor, &request, &ImpersonateAuthorizer) {
            Ok(Some(identity)) => (200, identity),
            Ok(None) => (200, requestor.clone()),
            Err(e) => (e.status_code(), requestor.clone()),
        };
        assert_eq!(code, case.code, "{}", case.name);
        let (name, groups, extra, uid) = case.expected;
        let extra: BTreeMap<String, Vec<String>> = extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), owned(v)))
            .collect();
        assert_eq!(
            seen,
            Identity {
                name: name.into(),
                uid: uid.into(),
                groups: owned(groups),
                extra,
            },
            "{}",
            case.name
        );
    }
}

#[test]
fn forbidden_and_bad_request_messages() {
    let alice = Identity::new("alice", vec![]);
    let request = ImpersonationRequest::from_headers([("impersonate-user", "bob")]);
    let err = impersonate(&alice, &request, &ImpersonateAuthorizer).unwrap_err();
    assert_eq!(err.status_code(), 403);
    assert_eq!(
        err.to_string(),
        r#"users "bob" is forbidden: User "alice" cannot impersonate resource "users" in API group "" at the cluster scope: deny by default"#
    );
    let sa = ImpersonationRequest::from_headers([(
        "Impersonate-User",
        "system:serviceaccount:foo:default",
    )]);
    let err = impersonate(&alice, &sa, &ImpersonateAuthorizer).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"serviceaccounts "default" is forbidden: User "alice" cannot impersonate resource "serviceaccounts" in API group "" in the namespace "foo": deny by default"#
    );
    let extra = ImpersonationRequest::from_headers([
        ("Impersonate-User", "bob"),
        ("Impersonate-Extra-Scopes", "s"),
    ]);
    let checks = extra.checks().unwrap();
    let a = checks[1].attributes(&alice);
    assert_eq!(
        (a.verb, a.api_group, a.resource, a.subresource, a.name),
        (
            "impersonate",
            "authentication.k8s.io",
            "userextras",
            "scopes",
            "s"
        )
    );

    let groups_only = ImpersonationRequest::from_headers([("Impersonate-Group", "some-group")]);
    let err = impersonate(&alice, &groups_only, &ImpersonateAuthorizer).unwrap_err();
    assert_eq!(err.status_code(), 400);
    assert_eq!(
        err.to_string(),
        "requested [{Group  some-group    }] without impersonating a user"
    );
    let uid_only = ImpersonationRequest::from_headers([
        ("Impersonate-Uid", "u1"),
        ("Impersonate-Extra-Scopes", "a"),
    ]);
    assert_eq!(
        uid_only.checks().unwrap_err().to_string(),
        "requested [{UserExtra  a  authentication.k8s.io/v1  scopes} {UID  u1  authentication.k8s.io/v1  }] without impersonating a user"
    );
    // An authorizer error is a 403 too, never a pass.
    let err = impersonate(
        &Identity::new("tester", vec![]),
        &request,
        &ImpersonateAuthorizer,
    )
    .unwrap_err();
    assert_eq!(err.status_code(), 403);
}

#[test]
fn extra_key_escaping() {
    // (header suffix client-go sends, key the server sees)
    for (suffix, key) in [
        ("alphabetical", "alphabetical"),
        ("alph4num3r1c", "alph4num3r1c"),
        ("percent%2520encoded", "percent%20encoded"),
        (
            "almost%25zzpercent%25xxencoded",
            "almost%zzpercent%xxencoded",
        ),
        (
            "example.com%2Fpercent%2520encoded",
            "example.com/percent%20encoded",
        ),
        (
            "example.com%2F%E1%9B%92%E1%9A%A5%E1%9B%8F%E1%9B%96%E1%9A%A5%E1%9A%A2%E3%81%A8%E3%83%AD%E3%83%93%E3%83%B3",
            "example.com/ᛒᚥᛏᛖᚥᚢとロビン",
        ),
        ("abc123!#$+.-_*%5C^`~|'", "abc123!#$+.-_*\\^`~|'"),
        ("%40%3D%3A", "@=:"),
    ] {
        let name = format!("Impersonate-Extra-{suffix}");
        let request = ImpersonationRequest::from_headers([
            ("Impersonate-User", "user"),
            (name.as_str(), "v"),
        ]);
        assert_eq!(
            request.extra,
            vec![(key.to_owned(), "v".to_owned())],
            "{suffix}"
        );
    }
    // client-go's ImpersonationConfig example.
    let request = ImpersonationRequest::from_headers([
        ("Impersonate-User", "user"),
        ("Impersonate-Uid", "uid-a"),
        ("Impersonate-Group", "one"),
        ("Impersonate-Group", "two"),
        ("Impersonate-Extra-First", "A"),
        ("Impersonate-Extra-First", "a"),
        ("Impersonate-Extra-Second", "B"),
        ("Impersonate-Extra-Second", "b"),
    ]);
    let identity = request.resulting_identity();
    assert_eq!(identity.name, "user");
    assert_eq!(identity.uid, "uid-a");
    assert_eq!(identity.groups, ["one", "two", "system:authenticated"]);
    assert_eq!(identity.extra["first"], ["A", "a"]);
    assert_eq!(identity.extra["second"], ["B", "b"]);
}

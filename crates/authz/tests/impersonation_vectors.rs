//! spec/vectors/kubernetes.md §V3.1 (TestImpersonationFilter, against both filters), §V3.2
//! (constrained impersonation's 403 messages) and §V3.4 (extra-key escaping).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use std::sync::Mutex;

use kubegate_authz::{
    Attributes, Authorizer, Decision, Identity, ImpersonationMode, ImpersonationModes,
    ImpersonationRequest, impersonate, impersonate_constrained,
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
        let (name, groups, extra, uid) = case.expected;
        let extra: BTreeMap<String, Vec<String>> = extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), owned(v)))
            .collect();
        let expected = Identity {
            name: name.into(),
            uid: uid.into(),
            groups: owned(groups),
            extra,
        };
        // The filter before 1.36, then the constrained one (the default since), which must
        // come to the same outcome for every case (GET pods, as the upstream test asks).
        let legacy = impersonate(&requestor, &request, &ImpersonateAuthorizer);
        let pods = Attributes::resource(&requestor, "get", "", "pods").with_api_version("v1");
        let constrained = impersonate_constrained(
            &pods,
            &request,
            &ImpersonateAuthorizer,
            &ImpersonationModes::default(),
        )
        .map(|i| i.map(|i| i.identity));
        for (filter, outcome) in [("legacy", legacy), ("constrained", constrained)] {
            let (code, seen) = match outcome {
                Ok(Some(identity)) => (200, identity),
                Ok(None) => (200, requestor.clone()),
                Err(e) => (e.status_code(), requestor.clone()),
            };
            assert_eq!(code, case.code, "{} ({filter})", case.name);
            assert_eq!(seen, expected, "{} ({filter})", case.name);
        }
    }
}

/// Upstream `constrainedImpersonationTest.Authorize`, rule for rule; it records what it was
/// asked, in order.
#[derive(Default)]
struct ConstrainedAuthorizer {
    asked: Mutex<Vec<String>>,
}

impl ConstrainedAuthorizer {
    fn asked(&self) -> Vec<String> {
        std::mem::take(&mut *self.asked.lock().unwrap())
    }
}

impl Authorizer for ConstrainedAuthorizer {
    fn authorize<'s>(&'s self, a: &Attributes<'_>) -> Decision<'s> {
        self.asked.lock().unwrap().push(format!(
            "{} {}/{}/{}/{} ns={} name={}",
            a.verb, a.api_group, a.api_version, a.resource, a.subresource, a.namespace, a.name
        ));
        let user = a.user.name.as_str();
        let group0 = a.user.groups.first().map(String::as_str);
        let allow = (user == "sa-impersonater"
            && a.verb == "impersonate:serviceaccount"
            && a.resource == "serviceaccounts")
            || (user == "system:serviceaccount:default:node"
                && a.verb == "impersonate:arbitrary-node"
                && a.resource == "nodes")
            || (user == "node-impersonater"
                && a.verb == "impersonate:arbitrary-node"
                && a.resource == "nodes")
            || (group0 == Some("associate-node-impersonater")
                && a.verb == "impersonate:associated-node"
                && a.resource == "nodes")
            || (user == "user-impersonater"
                && a.verb == "impersonate:user-info"
                && a.resource == "users")
            || (group0 == Some("group-impersonater")
                && a.verb == "impersonate:user-info"
                && a.resource == "groups")
            || (group0 == Some("extra-setter-scopes")
                && a.verb == "impersonate:user-info"
                && a.resource == "userextras"
                && a.subresource == "pandas.io/scopes")
            || (user == "legacy-impersonater" && a.verb == "impersonate")
            || (user != "legacy-impersonator"
                && a.verb.starts_with("impersonate-on:")
                && (a.verb.ends_with("list") || a.verb.ends_with("get")))
            || (user == "many-groups-impersonater"
                && a.verb == "impersonate:user-info"
                && (a.resource == "users" || (a.resource == "groups" && a.name == "*")))
            || (user == "many-extras-impersonater"
                && a.verb == "impersonate:user-info"
                && (a.resource == "users"
                    || (a.resource == "userextras" && a.subresource == "*" && a.name == "*")));
        if allow {
            Decision::allow("")
        } else {
            Decision::no_opinion("deny by default")
        }
    }
}

fn request(headers: &[(&str, &str)]) -> ImpersonationRequest {
    ImpersonationRequest::from_headers(headers.iter().copied())
}

#[test]
fn constrained_impersonation_403_messages() {
    let authz = ConstrainedAuthorizer::default();
    let refusal =
        |requestor: &str, verb: &str, namespace: &str, name: &str, headers: &[(&str, &str)]| {
            let requestor = Identity::new(requestor, vec![]);
            let attributes = Attributes::resource(&requestor, verb, "", "pods")
                .with_api_version("v1")
                .in_namespace(namespace)
                .named(name);
            let err = impersonate_constrained(
                &attributes,
                &request(headers),
                &authz,
                &ImpersonationModes::default(),
            )
            .unwrap_err();
            assert_eq!(err.status_code(), 403);
            err.to_string()
        };
    #[rustfmt::skip]
    let cases: [(String, &str); 6] = [
        (refusal("tester", "get", "", "", &[("Impersonate-User", "anyone")]),
         r#"users.authentication.k8s.io "anyone" is forbidden: User "tester" cannot impersonate:user-info resource "users" in API group "authentication.k8s.io" at the cluster scope: deny by default"#),
        (refusal("user-impersonater", "create", "bar", "foo", &[("Impersonate-User", "anyone")]),
         r#"pods "foo" is forbidden: User "user-impersonater" cannot impersonate-on:user-info:create resource "pods" in API group "" in the namespace "bar": deny by default"#),
        (refusal("sa-impersonater", "get", "", "", &[("Impersonate-User", "system:node:node1")]),
         r#"nodes.authentication.k8s.io "node1" is forbidden: User "sa-impersonater" cannot impersonate:arbitrary-node resource "nodes" in API group "authentication.k8s.io" at the cluster scope: deny by default"#),
        (refusal("node-impersonater", "create", "bar", "foo", &[("Impersonate-User", "system:node:node1")]),
         r#"pods "foo" is forbidden: User "node-impersonater" cannot impersonate-on:arbitrary-node:create resource "pods" in API group "" in the namespace "bar": deny by default"#),
        (refusal("user-impersonater", "get", "", "", &[("Impersonate-User", "anyone"), ("Impersonate-Extra-Pandas.io%2fscopes", "scope-a")]),
         r#"userextras.authentication.k8s.io "scope-a" is forbidden: User "user-impersonater" cannot impersonate:user-info resource "userextras/pandas.io/scopes" in API group "authentication.k8s.io" at the cluster scope: deny by default"#),
        (refusal("user-impersonater", "get", "", "", &[("Impersonate-User", "anyone"), ("Impersonate-Group", "system:masters")]),
         r#"groups.authentication.k8s.io "system:masters" is forbidden: User "user-impersonater" cannot impersonate:user-info resource "groups" in API group "authentication.k8s.io" at the cluster scope: impersonating the system:masters group is not allowed"#),
    ];
    for (got, want) in cases {
        assert_eq!(got, want);
    }
}

#[test]
fn constrained_impersonation_asks_the_request_then_the_user_then_legacy() {
    let authz = ConstrainedAuthorizer::default();
    let tester = Identity::new("tester", vec![]);
    let pods = Attributes::resource(&tester, "get", "", "pods").with_api_version("v1");
    let anyone = request(&[("Impersonate-User", "anyone")]);
    impersonate_constrained(&pods, &anyone, &authz, &ImpersonationModes::default()).unwrap_err();
    assert_eq!(
        authz.asked(),
        [
            "impersonate-on:user-info:get /v1/pods/ ns= name=",
            "impersonate:user-info authentication.k8s.io/v1/users/ ns= name=anyone",
            "impersonate /v1/users/ ns= name=anyone",
        ]
    );
}

#[test]
fn constrained_impersonation_modes() {
    let authz = ConstrainedAuthorizer::default();
    let modes = ImpersonationModes::default();
    let get_pods = |requestor: &Identity, headers: &[(&str, &str)]| {
        let pods = Attributes::resource(requestor, "list", "", "pods").with_api_version("v1");
        impersonate_constrained(&pods, &request(headers), &authz, &modes)
    };

    // A service account impersonates the node its pod runs on: the authorizer sees its extra
    // keys only and `*` for the node, and the node gets the nodes group.
    let mut agent = Identity::new(
        "system:serviceaccount:kube-system:agent",
        vec!["associate-node-impersonater".into()],
    );
    agent.extra.insert(
        "authentication.kubernetes.io/node-name".into(),
        vec!["node1".into()],
    );
    agent.extra.insert(
        "authentication.kubernetes.io/pod-name".into(),
        vec!["agent-x".into()],
    );
    let node = get_pods(&agent, &[("Impersonate-User", "system:node:node1")])
        .unwrap()
        .unwrap();
    assert_eq!(node.mode, ImpersonationMode::AssociatedNode);
    assert_eq!(node.identity.name, "system:node:node1");
    assert_eq!(
        node.identity.groups,
        ["system:nodes", "system:authenticated"]
    );
    assert_eq!(
        authz.asked(),
        [
            "impersonate-on:associated-node:list /v1/pods/ ns= name=",
            "impersonate:associated-node authentication.k8s.io/v1/nodes/ ns= name=*",
        ]
    );
    // Another node is not its own: the arbitrary-node mode is tried, and refused.
    let err = get_pods(&agent, &[("Impersonate-User", "system:node:node2")]).unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot impersonate:arbitrary-node"),
        "{err}"
    );
    authz.asked();

    // Service accounts, and groups too many to check one by one.
    let sa = get_pods(
        &Identity::new("sa-impersonater", vec![]),
        &[("Impersonate-User", "system:serviceaccount:ns:app")],
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        (sa.mode, sa.mode.verb()),
        (
            ImpersonationMode::ServiceAccount,
            "impersonate:serviceaccount"
        )
    );
    assert_eq!(
        sa.identity.groups,
        [
            "system:serviceaccounts",
            "system:serviceaccounts:ns",
            "system:authenticated"
        ]
    );
    authz.asked();
    let many = [
        ("Impersonate-User", "bob"),
        ("Impersonate-Group", "a"),
        ("Impersonate-Group", "b"),
        ("Impersonate-Group", "c"),
        ("Impersonate-Group", "d"),
    ];
    let bob = get_pods(&Identity::new("many-groups-impersonater", vec![]), &many)
        .unwrap()
        .unwrap();
    assert_eq!(bob.mode, ImpersonationMode::UserInfo);
    assert_eq!(
        bob.identity.groups,
        ["a", "b", "c", "d", "system:authenticated"]
    );
    assert_eq!(
        authz.asked().last().unwrap(),
        "impersonate:user-info authentication.k8s.io/v1/groups/ ns= name=*"
    );

    // Legacy grants keep working; the mode is remembered and tried first next time, so a
    // later refusal is the legacy mode's.
    let legacy = Identity::new("legacy-impersonater", vec![]);
    let pods = Attributes::resource(&legacy, "create", "", "pods").with_api_version("v1");
    let ok = impersonate_constrained(
        &pods,
        &request(&[("Impersonate-User", "bob")]),
        &authz,
        &modes,
    )
    .unwrap()
    .unwrap();
    assert_eq!(ok.mode, ImpersonationMode::Legacy);
    // Legacy allows what the constrained modes refuse (the empty group).
    let empty_group = request(&[("Impersonate-User", "bob"), ("Impersonate-Group", "")]);
    let fresh = ImpersonationModes::default();
    assert!(impersonate_constrained(&pods, &empty_group, &authz, &fresh).is_ok());
    // Once nothing is allowed, a fresh filter reports the first mode's refusal; one that
    // remembers the legacy mode for this requestor reports the legacy refusal.
    struct Nothing;
    impl Authorizer for Nothing {
        fn authorize<'s>(&'s self, _: &Attributes<'_>) -> Decision<'s> {
            Decision::no_opinion("deny by default")
        }
    }
    let bob = request(&[("Impersonate-User", "bob")]);
    let unremembered =
        impersonate_constrained(&pods, &bob, &Nothing, &ImpersonationModes::default()).unwrap_err();
    assert_eq!(
        unremembered.to_string(),
        r#"pods is forbidden: User "legacy-impersonater" cannot impersonate-on:user-info:create resource "pods" in API group "" at the cluster scope: deny by default"#
    );
    let remembered = impersonate_constrained(&pods, &bob, &Nothing, &modes).unwrap_err();
    assert_eq!(
        remembered.to_string(),
        r#"users "bob" is forbidden: User "legacy-impersonater" cannot impersonate resource "users" in API group "" at the cluster scope: deny by default"#
    );
}

#[test]
fn an_allowed_check_with_an_error_stands_in_the_constrained_filter() {
    struct AllowWithError;
    impl Authorizer for AllowWithError {
        fn authorize<'s>(&'s self, _: &Attributes<'_>) -> Decision<'s> {
            Decision::allow("").with_error("partial failure")
        }
    }
    let alice = Identity::new("alice", vec![]);
    let bob = request(&[("Impersonate-User", "bob")]);
    let pods = Attributes::resource(&alice, "get", "", "pods").with_api_version("v1");
    assert!(impersonate(&alice, &bob, &AllowWithError).is_err());
    let ok = impersonate_constrained(&pods, &bob, &AllowWithError, &ImpersonationModes::default());
    assert_eq!(ok.unwrap().unwrap().identity.name, "bob");
}

#[test]
fn constrained_bad_requests_and_sanity_refusals() {
    let authz = ConstrainedAuthorizer::default();
    let alice = Identity::new("user-impersonater", vec![]);
    let pods = Attributes::resource(&alice, "get", "", "pods").with_api_version("v1");
    let run = |headers: &[(&str, &str)]| {
        impersonate_constrained(
            &pods,
            &request(headers),
            &authz,
            &ImpersonationModes::default(),
        )
        .unwrap_err()
    };
    let err = run(&[
        ("Impersonate-Group", "some-group"),
        ("Impersonate-Extra-Scopes", "a\\"),
        ("Impersonate-Extra-Scopes", "b"),
    ]);
    assert_eq!(err.status_code(), 400);
    assert_eq!(
        err.to_string(),
        r#"requested &user.DefaultInfo{Name:"", UID:"", Groups:[]string{"some-group"}, Extra:map[string][]string{"scopes":[]string{"a\\", "b"}}} without impersonating a user name"#
    );
    let err = run(&[("Impersonate-Uid", "u1")]);
    assert_eq!(
        err.to_string(),
        r#"requested &user.DefaultInfo{Name:"", UID:"u1", Groups:[]string(nil), Extra:map[string][]string(nil)} without impersonating a user name"#
    );
    // The extra key must be a domain-prefixed path; the legacy refusal comes second.
    let err = run(&[
        ("Impersonate-User", "anyone"),
        ("Impersonate-Extra-Scopes", "a"),
    ]);
    assert_eq!(
        err.to_string(),
        r#"userextras.authentication.k8s.io is forbidden: User "user-impersonater" cannot impersonate:user-info resource "userextras" in API group "authentication.k8s.io" at the cluster scope: impersonating an invalid key in extra is not allowed: extra.key: Invalid value: "scopes": must be a domain-prefixed path (such as "acme.io/foo")"#
    );
    let err = run(&[
        ("Impersonate-User", "anyone"),
        ("Impersonate-Extra-Bad_Host%2fx", "a"),
    ]);
    assert!(err.to_string().ends_with(r#"impersonating an invalid key in extra is not allowed: extra.key: Invalid value: "bad_host": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"#), "{err}");
    let err = run(&[("Impersonate-User", "anyone"), ("Impersonate-Group", "")]);
    assert!(err.to_string().starts_with(r#"groups.authentication.k8s.io is forbidden: User "user-impersonater" cannot impersonate:user-info resource "groups""#), "{err}");
    assert!(
        err.to_string()
            .ends_with(": impersonating the empty string group is not allowed"),
        "{err}"
    );
    let err = run(&[
        ("Impersonate-User", "anyone"),
        ("Impersonate-Extra-Pandas.io%2fscopes", ""),
    ]);
    assert!(
        err.to_string()
            .ends_with(": impersonating the empty string value in extra is not allowed"),
        "{err}"
    );
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

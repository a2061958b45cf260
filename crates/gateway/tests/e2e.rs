//! End-to-end: real kubectl and raw HTTPS through the gateway to two fake kube-apiservers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::Engine as _;
use common::*;

const A: &str = "/kubernetes/cluster/a";
const B: &str = "/kubernetes/cluster/b";
const MGMT: &str = "/kubernetes/management";

/// The management API's `management.loft.sh/v1` URL at `env`'s gateway.
fn v1_url(env: &Env) -> String {
    format!("{}{MGMT}/apis/management.loft.sh/v1", env.url)
}
const SPACE: &str = "/kubernetes/project/p1/space/s1";
const PVC: &str = "/kubernetes/project/p1/virtualcluster/pv1";
const LEGACY_VC: &str = "/kubernetes/virtualcluster/a/team/vc1";

/// The seed flow: `kubectl create -f` of a DirectClusterEndpointToken with `spec: {}` prints the
/// object with a token, and that token works as a bearer credential through the gateway.
#[tokio::test(flavor = "multi_thread")]
async fn seed_flow_direct_cluster_endpoint_token() {
    require_kubectl();
    let env = Env::start().await;
    let file = env.dir.join("object.yaml");
    std::fs::write(
        &file,
        "apiVersion: management.loft.sh/v1\nkind: DirectClusterEndpointToken\nspec: {}\n",
    )
    .unwrap();
    let out = env
        .kubectl(
            ADMIN_KEY,
            MGMT,
            &["create", "-f", file.to_str().unwrap(), "-o", "json"],
        )
        .await;
    let created: serde_json::Value = serde_json::from_str(&assert_ok(&out)).unwrap();
    assert_eq!(created["kind"], "DirectClusterEndpointToken");
    let token = created["status"]["token"].as_str().unwrap().to_owned();
    assert_eq!(token.split('.').count(), 3, "a JWT");
    let pods = env.kubectl(&token, A, &["get", "pods"]).await;
    assert_ok(&pods);
    let last = env.a.last_request_to("/pods").unwrap();
    assert_eq!(last.effective_user().unwrap().name, "admin");
}

#[tokio::test(flavor = "multi_thread")]
async fn management_lists_clusters_and_discovery_works() {
    let env = Env::start().await;
    let out = assert_ok(&env.kubectl(ADMIN_KEY, MGMT, &["get", "clusters"]).await);
    assert!(
        out.contains("NAME") && out.contains("\na ") && out.contains("\nb "),
        "{out}"
    );
    let out = assert_ok(
        &env.kubectl(VIEWER_KEY, MGMT, &["get", "clusters", "-o", "name"])
            .await,
    );
    assert_eq!(out.lines().count(), 2, "{out}");
    // The scoped key sees only the cluster its scope admits.
    let out = assert_ok(
        &env.kubectl(SCOPED_KEY, MGMT, &["get", "clusters", "-o", "name"])
            .await,
    );
    assert_eq!(out.trim(), "cluster.management.loft.sh/a");
    // A scope without a management rule or role admits no management request (spec §5).
    let denied = env
        .kubectl(CLUSTER_ONLY_KEY, MGMT, &["get", "clusters"])
        .await;
    assert_forbidden(
        &denied,
        "the access key's scope does not allow this request",
    );
    let out = assert_ok(
        &env.kubectl(
            SPACE_KEY,
            MGMT,
            &["get", "spaceinstances", "-A", "-o", "name"],
        )
        .await,
    );
    assert_eq!(out.trim(), "spaceinstance.management.loft.sh/s1");
    let out = assert_ok(
        &env.kubectl(
            ADMIN_KEY,
            MGMT,
            &[
                "get",
                "--raw",
                "/kubernetes/management/apis/management.loft.sh/v1",
            ],
        )
        .await,
    );
    assert!(out.contains("directclusterendpointtokens"));
    let out = env
        .kubectl(ADMIN_KEY, MGMT, &["get", "clusters", "nope"])
        .await;
    assert!(
        stderr(&out).contains("NotFound") || stderr(&out).contains("not found"),
        "{}",
        stderr(&out)
    );
}

/// The management API's documents come out byte for byte as a Go API server writes them:
/// fields in the Go structs' order (`kind` before `apiVersion`, `metadata` in `ObjectMeta`
/// order), Go's `omitempty` omissions, and typed list items without `kind`/`apiVersion`.
/// The default table convertor's column descriptions: `metav1.ObjectMeta`'s `SwaggerDoc()`.
const NAME_COLUMN: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const CREATED_COLUMN: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\\n\\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

#[tokio::test(flavor = "multi_thread")]
async fn management_documents_are_written_in_go_field_order() {
    let env = Env::start().await;
    let client = env.client();
    let get = |path: &str, accept: &'static str| {
        let url = format!("{}/kubernetes/management{path}", env.url);
        let client = &client;
        async move {
            let reply = client.get(&url, ADMIN_KEY, &[("accept", accept)]).await;
            assert_eq!(reply.status, 200, "{url}: {}", reply.body);
            reply.body
        }
    };
    let json = "application/json";
    let uid = |body: &str| {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        let uid = &v["metadata"]["uid"];
        let uid = if uid.is_null() {
            &v["items"][0]["metadata"]["uid"]
        } else {
            uid
        };
        uid.as_str().unwrap().to_owned()
    };

    let body = get("/apis/management.loft.sh/v1/clusters/b", json).await;
    let expected = format!(
        r#"{{"kind":"Cluster","apiVersion":"management.loft.sh/v1","metadata":{{"name":"b","uid":"{}"}},"spec":{{}},"status":{{"phase":"Initialized"}}}}
"#,
        uid(&body)
    );
    assert_eq!(body, expected);

    let body = get(
        "/apis/management.loft.sh/v1/namespaces/p-p1/spaceinstances",
        json,
    )
    .await;
    let expected = format!(
        r#"{{"kind":"SpaceInstanceList","apiVersion":"management.loft.sh/v1","metadata":{{}},"items":[{{"metadata":{{"name":"s1","namespace":"p-p1","uid":"{}"}},"spec":{{"clusterRef":{{"cluster":"a","namespace":"s1"}}}},"status":{{"phase":"Ready","canUse":true}}}}]}}
"#,
        uid(&body)
    );
    assert_eq!(body, expected);

    // `vcluster platform` lists only the instances whose status says it can use them.
    let body = get(
        "/apis/management.loft.sh/v1/namespaces/p-p1/virtualclusterinstances/pv1",
        json,
    )
    .await;
    let vci: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        vci["status"],
        serde_json::json!({"phase": "Ready", "canUse": true}),
        "{body}"
    );

    let body = get("/apis/management.loft.sh/v1/projects/p1", json).await;
    let expected = format!(
        r#"{{"kind":"Project","apiVersion":"management.loft.sh/v1","metadata":{{"name":"p1","uid":"{}"}},"spec":{{}},"status":{{}}}}
"#,
        uid(&body)
    );
    assert_eq!(body, expected);

    let table = "application/json;as=Table;v=v1;g=meta.k8s.io";
    let body = get("/apis/management.loft.sh/v1/projects", table).await;
    let expected = format!(
        r#"{{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{{}},"columnDefinitions":[{{"name":"Name","type":"string","format":"name","description":"{name}","priority":0}},{{"name":"Created At","type":"date","format":"","description":"{created}","priority":0}}],"rows":[{{"cells":["p1","0001-01-01T00:00:00Z"],"object":{{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{{"name":"p1","uid":"{}"}}}}}}]}}
"#,
        uid(&get("/apis/management.loft.sh/v1/projects/p1", json).await),
        name = NAME_COLUMN,
        created = CREATED_COLUMN,
    );
    assert_eq!(body, expected);

    // No rows: Go's nil slice, written as null.
    let empty = get("/apis/management.loft.sh/v1/ownedaccesskeys", table).await;
    assert!(
        empty.ends_with(
            r#""rows":null}
"#
        ),
        "{empty}"
    );

    assert_eq!(
        get("/api", json).await,
        r#"{"kind":"APIVersions","versions":[],"serverAddressByClientCIDRs":null}
"#
    );
    assert_eq!(
        get("/apis", json).await,
        r#"{"kind":"APIGroupList","apiVersion":"v1","groups":[{"name":"management.loft.sh","versions":[{"groupVersion":"management.loft.sh/v1","version":"v1"}],"preferredVersion":{"groupVersion":"management.loft.sh/v1","version":"v1"}}]}
"#
    );
    assert_eq!(
        get("/apis/management.loft.sh", json).await,
        r#"{"kind":"APIGroup","apiVersion":"v1","name":"management.loft.sh","versions":[{"groupVersion":"management.loft.sh/v1","version":"v1"}],"preferredVersion":{"groupVersion":"management.loft.sh/v1","version":"v1"}}
"#
    );
    let resources = get("/apis/management.loft.sh/v1", json).await;
    assert!(
        resources.starts_with(r#"{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"management.loft.sh/v1","resources":[{"name":"clusters","singularName":"cluster","namespaced":false,"kind":"Cluster","verbs":["get","list"]},"#),
        "{resources}"
    );
    let aggregated = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
    let groups = get("/apis", aggregated).await;
    assert!(
        groups.starts_with(r#"{"kind":"APIGroupDiscoveryList","apiVersion":"apidiscovery.k8s.io/v2","metadata":{},"items":[{"metadata":{"name":"management.loft.sh"},"versions":[{"version":"v1","resources":[{"resource":"clusters","responseKind":{"group":"management.loft.sh","version":"v1","kind":"Cluster"},"scope":"Cluster","singularResource":"cluster","verbs":["get","list"]},"#),
        "{groups}"
    );
    // `WriteObjectNegotiated`'s encoder ends the document with a newline, as for every object.
    assert!(
        groups.ends_with(
            r#"}],"freshness":"Current"}]}]}
"#
        ),
        "{groups}"
    );
    assert_eq!(
        get("/api", aggregated).await,
        r#"{"kind":"APIGroupDiscoveryList","apiVersion":"apidiscovery.k8s.io/v2","metadata":{},"items":[]}
"#
    );
    // The ETag: SHA-512 of `json.Marshal`'s bytes (no newline), upper-case hex, quoted; asked
    // again with it, a 304.
    let url = format!("{}/kubernetes/management/apis", env.url);
    let reply = client.get(&url, ADMIN_KEY, &[("accept", aggregated)]).await;
    let etag = reply.headers["etag"].to_str().unwrap().to_owned();
    let marshalled = reply.body.strip_suffix('\n').unwrap();
    use sha2::Digest;
    let digest: String = sha2::Sha512::digest(marshalled.as_bytes())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    assert_eq!(etag, format!("\"{digest}\""));
    let again = client
        .get(
            &url,
            ADMIN_KEY,
            &[("accept", aggregated), ("if-none-match", etag.as_str())],
        )
        .await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    let version = get("/version", json).await;
    assert!(
        version.starts_with(
            "{\n  \"major\": \"1\",\n  \"minor\": \"37\",\n  \"gitVersion\": \"v1.37.0-kubegate."
        ),
        "{version}"
    );
    assert!(!version.ends_with('\n'), "WriteRawJSON adds no newline");

    // kube's serializer: pretty for `?pretty` or curl's User-Agent (two-space indent, no
    // closing newline), compact otherwise; Go's escaping; `Cache-Control` on every answer.
    let group = format!("{}/kubernetes/management/apis/management.loft.sh", env.url);
    let indented = "{\n  \"kind\": \"APIGroup\",\n  \"apiVersion\": \"v1\",\n  \"name\": \"management.loft.sh\",\n  \"versions\": [\n    {\n      \"groupVersion\": \"management.loft.sh/v1\",\n      \"version\": \"v1\"\n    }\n  ],\n  \"preferredVersion\": {\n    \"groupVersion\": \"management.loft.sh/v1\",\n    \"version\": \"v1\"\n  }\n}";
    for (query, agent, pretty) in [
        ("?pretty=true", "kubectl/v1.37.0", true),
        ("", "curl/8.5.0", true),
        ("?pretty=false", "curl/8.5.0", false),
        ("?pretty=1", "Go-http-client/1.1", true),
        ("", "Go-http-client/1.1", false),
    ] {
        let reply = client
            .get(
                &format!("{group}{query}"),
                ADMIN_KEY,
                &[("user-agent", agent)],
            )
            .await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.headers["cache-control"], "no-cache, private");
        if pretty {
            assert_eq!(reply.body, indented, "{query} {agent}");
        } else {
            assert!(
                reply.body.ends_with("}\n") && !reply.body.contains("\n "),
                "{query} {agent}"
            );
        }
    }
    let keys = format!("{}/ownedaccesskeys", v1_url(&env));
    let made = client
        .post(
            &keys,
            ADMIN_KEY,
            "application/json",
            br#"{"metadata":{"name":"escaped"},"spec":{"displayName":"a<b&c>\u2028"}}"#.to_vec(),
        )
        .await;
    assert_eq!(made.status, 201, "{}", made.body);
    assert!(
        made.body
            .contains(r#""displayName":"a\u003cb\u0026c\u003e\u2028""#),
        "{}",
        made.body
    );
    let listed = client.get(&keys, ADMIN_KEY, &[]).await;
    assert!(
        listed
            .body
            .contains(r#""displayName":"a\u003cb\u0026c\u003e\u2028""#),
        "{}",
        listed.body
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn scoped_key_reaches_cluster_a_not_b() {
    let env = Env::start().await;
    assert_ok(&env.kubectl(SCOPED_KEY, A, &["get", "configmaps"]).await);
    // kubectl fails at discovery (kube-apiserver's own 403 for `/api` makes kubectl print
    // "unknown" too); the Status body says why.
    let denied = env.kubectl(SCOPED_KEY, B, &["get", "configmaps"]).await;
    assert!(!denied.status.success());
    let reply = env
        .client()
        .get(
            &format!("{}{B}/api/v1/namespaces/default/configmaps", env.url),
            SCOPED_KEY,
            &[],
        )
        .await;
    assert_eq!(reply.status, 403);
    assert_eq!(
        reply.body,
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"configmaps is forbidden: User \\\"scoped\\\" cannot list resource \\\"configmaps\\\" in API group \\\"\\\" in the namespace \\\"default\\\": the access key's scope does not allow this request to cluster \\\"b\\\"\",\"reason\":\"Forbidden\",\"details\":{\"kind\":\"configmaps\"},\"code\":403}\n"
    );
    assert_ok(
        &env.kubectl(CLUSTER_ONLY_KEY, A, &["get", "configmaps"])
            .await,
    );
    assert!(
        env.b
            .requests()
            .iter()
            .all(|r| !r.path.contains("configmaps")),
        "a refused request never reaches the upstream"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn viewer_cannot_delete_operator_can_write() {
    let env = Env::start().await;
    env.a
        .create(
            "configmaps",
            "default",
            serde_json::json!({"metadata": {"name": "keep"}}),
        )
        .unwrap();
    let out = assert_ok(
        &env.kubectl(VIEWER_KEY, A, &["get", "configmap", "keep", "-o", "name"])
            .await,
    );
    assert_eq!(out.trim(), "configmap/keep");
    let denied = env
        .kubectl(VIEWER_KEY, A, &["delete", "configmap", "keep"])
        .await;
    assert_forbidden(
        &denied,
        "configmaps \"keep\" is forbidden: User \"viewer\" cannot delete resource \"configmaps\" in API group \"\" in the namespace \"default\"",
    );
    assert!(
        env.a
            .get("configmaps", "default", "keep")
            .unwrap()
            .is_some()
    );
    // Secrets are outside the viewer tier.
    assert_forbidden(
        &env.kubectl(VIEWER_KEY, A, &["get", "secrets"]).await,
        "cannot list resource \"secrets\"",
    );
    let made = env.dir.join("made.yaml");
    std::fs::write(
        &made,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: made\ndata:\n  k: v\n",
    )
    .unwrap();
    assert_ok(
        &env.kubectl(OPERATOR_KEY, A, &["create", "-f", made.to_str().unwrap()])
            .await,
    );
    assert!(
        env.a
            .get("configmaps", "default", "made")
            .unwrap()
            .is_some()
    );
    assert_ok(
        &env.kubectl(OPERATOR_KEY, A, &["delete", "configmap", "made"])
            .await,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn write_gate_blocks_everyone_but_admins() {
    let env = Env::start().await;
    let mut config = env.config.clone();
    config.read_only = true;
    env.gateway.reload(config).await.unwrap();
    let file = env.dir.join("cm.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: gated\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let denied = env.kubectl(OPERATOR_KEY, A, &["create", "-f", file]).await;
    assert_forbidden(&denied, "the gateway is read-only");
    assert_ok(&env.kubectl(OPERATOR_KEY, A, &["get", "configmaps"]).await);
    assert_ok(&env.kubectl(ADMIN_KEY, A, &["create", "-f", file]).await);
    // A shell writes as surely as a create does. kubectl's WebSocket exec is a `get` of
    // pods/exec, which the operator tier may do; the extra `create` check (kube-apiserver's
    // since 1.35) is what the read-only gate refuses, with kube's message for that check.
    env.a
        .create("pods", "default", serde_json::json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}))
        .unwrap();
    let exec = ["exec", "web", "--", "echo", "hi"];
    let denied = env.kubectl(OPERATOR_KEY, A, &exec).await;
    // (kubectl falls back to SPDY, a `create`, after the WebSocket refusal.)
    assert_forbidden(&denied, "the gateway is read-only");
    let exec_url = format!(
        "{}{A}/api/v1/namespaces/default/pods/web/exec?command=sh&stdin=true",
        env.url
    );
    let reply = env
        .client()
        .get(
            &exec_url,
            OPERATOR_KEY,
            &[
                ("connection", "Upgrade"),
                ("upgrade", "websocket"),
                ("sec-websocket-version", "13"),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("sec-websocket-protocol", "v5.channel.k8s.io"),
            ],
        )
        .await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    let status: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(
        status["message"],
        format!(
            r#"pods "web" is forbidden: {}"#,
            kubegate_authz::READ_ONLY_REASON
        )
    );
    assert_eq!(status["details"]["kind"], "pods");
    let out = env.kubectl(ADMIN_KEY, A, &exec).await;
    assert!(
        stdout(&out).contains(kubegate_testkit::EXEC_STDOUT_PREFIX),
        "{}",
        stderr(&out)
    );
    // The management API: no new access keys but an admin's; a credential may still describe
    // itself and get a token for a direct cluster endpoint (neither stores anything).
    let management = v1_url(&env);
    let post = |resource: &'static str, key: &'static str, body: &'static str| {
        let client = env.client();
        let url = format!("{management}/{resource}");
        async move {
            client
                .post(&url, key, "application/json", body.as_bytes().to_vec())
                .await
        }
    };
    let key = r#"{"metadata":{"name":"while-read-only"},"spec":{}}"#;
    let refused = post("ownedaccesskeys", OPERATOR_KEY, key).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        refused.body.contains("the gateway is read-only"),
        "{}",
        refused.body
    );
    assert_eq!(post("ownedaccesskeys", ADMIN_KEY, key).await.status, 201);
    let me = r#"{"apiVersion":"management.loft.sh/v1","kind":"Self","spec":{}}"#;
    assert_eq!(post("selves", OPERATOR_KEY, me).await.status, 201);
    let token =
        r#"{"apiVersion":"management.loft.sh/v1","kind":"DirectClusterEndpointToken","spec":{}}"#;
    let minted = post("directclusterendpointtokens", OPERATOR_KEY, token).await;
    assert_eq!(minted.status, 201, "{}", minted.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn impersonation_with_as() {
    let env = Env::start().await;
    assert_ok(
        &env.kubectl(
            ADMIN_KEY,
            A,
            &["--as", "viewer", "--as-group", "devs", "get", "pods"],
        )
        .await,
    );
    let last = env.a.last_request_to("/pods").unwrap();
    let user = last.effective_user().unwrap();
    assert_eq!(user.name, "viewer");
    assert!(
        user.groups.contains(&"devs".to_owned()),
        "{:?}",
        user.groups
    );
    // The audit event names both: who authenticated, and whom they acted as.
    let event = audit_events(&env, "/kubernetes/cluster/a/api/v1/namespaces/default/pods")
        .into_iter()
        .find(|e| e["stage"] == "ResponseComplete" && e.get("impersonatedUser").is_some())
        .expect("an audit event for the impersonated list");
    assert_eq!(event["user"]["username"], "admin");
    assert_eq!(event["impersonatedUser"]["username"], "viewer");
    assert!(
        event["impersonatedUser"]["groups"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("devs")),
        "{event}"
    );
    // Refused as kube-apiserver (1.36+) refuses it: the first constrained mode's check, on
    // the request itself.
    let denied = env
        .kubectl(VIEWER_KEY, A, &["--as", "admin", "get", "pods"])
        .await;
    assert_forbidden(
        &denied,
        "pods is forbidden: User \"viewer\" cannot impersonate-on:user-info:list resource \"pods\" in API group \"\" in the namespace \"default\"",
    );
}

/// Constrained impersonation (KEP-5284) through gateway RBAC: the operator may act as the
/// viewer, but only to list pods (and read discovery, which kubectl does first).
#[tokio::test(flavor = "multi_thread")]
async fn constrained_impersonation_limits_what_an_impersonator_may_do() {
    let env = Env::start_with(
        r#"  - apiVersion: rbac.authorization.k8s.io/v1
    kind: ClusterRole
    metadata: {name: list-pods-as-viewer}
    rules:
      - {apiGroups: [authentication.k8s.io], resources: [users], resourceNames: [viewer], verbs: ["impersonate:user-info"]}
      - {apiGroups: [authentication.k8s.io], resources: [groups], resourceNames: [devs], verbs: ["impersonate:user-info"]}
      - {apiGroups: [""], resources: [pods], verbs: ["impersonate-on:user-info:list"]}
      - {nonResourceURLs: ["/api", "/api/*", "/apis", "/apis/*"], verbs: ["impersonate-on:user-info:get"]}
  - apiVersion: rbac.authorization.k8s.io/v1
    kind: ClusterRoleBinding
    metadata: {name: operator-lists-pods-as-viewer}
    roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: list-pods-as-viewer}
    subjects: [{kind: User, name: operator, apiGroup: rbac.authorization.k8s.io}]
"#,
    )
    .await;
    assert_ok(
        &env.kubectl(
            OPERATOR_KEY,
            A,
            &["--as", "viewer", "--as-group", "devs", "get", "pods"],
        )
        .await,
    );
    let seen = env.a.last_request_to("/pods").unwrap();
    let user = seen.effective_user().unwrap();
    assert_eq!(user.name, "viewer");
    assert_eq!(user.groups, ["devs", "system:authenticated"]);
    assert_forbidden(
        &env.kubectl(
            OPERATOR_KEY,
            A,
            &["--as", "viewer", "--as-group", "devs", "get", "configmaps"],
        )
        .await,
        "configmaps is forbidden: User \"operator\" cannot impersonate-on:user-info:list resource \"configmaps\" in API group \"\" in the namespace \"default\"",
    );
    assert_forbidden(
        &env.kubectl(
            OPERATOR_KEY,
            A,
            &["--as", "admin", "--as-group", "devs", "get", "pods"],
        )
        .await,
        "users.authentication.k8s.io \"admin\" is forbidden: User \"operator\" cannot impersonate:user-info resource \"users\" in API group \"authentication.k8s.io\" at the cluster scope",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn space_is_fenced_to_its_namespace() {
    let env = Env::start().await;
    assert_ok(
        &env.kubectl(SPACE_KEY, SPACE, &["get", "pods", "-n", "s1"])
            .await,
    );
    assert_ok(
        &env.kubectl(SPACE_KEY, SPACE, &["get", "namespace", "s1"])
            .await,
    );
    assert_forbidden(
        &env.kubectl(SPACE_KEY, SPACE, &["get", "pods", "-n", "default"])
            .await,
        "requests to space \"s1\" of project \"p1\" must stay in namespace \"s1\"",
    );
    assert_forbidden(
        &env.kubectl(SPACE_KEY, SPACE, &["get", "namespaces"]).await,
        "must stay in namespace",
    );
    // The space user has no access to the cluster as a whole.
    assert!(
        !env.kubectl(SPACE_KEY, A, &["get", "pods"])
            .await
            .status
            .success()
    );
    let reply = env
        .client()
        .get(
            &format!("{}{A}/api/v1/namespaces/s1/pods", env.url),
            SPACE_KEY,
            &[],
        )
        .await;
    assert_eq!(reply.status, 403);
    assert!(
        reply
            .body
            .contains("access to cluster \\\"a\\\" is not granted"),
        "{}",
        reply.body
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_target_kind_forwards_get_watch_and_exec() {
    let env = Env::start().await;
    for (prefix, server) in [(A, &env.a), (LEGACY_VC, &env.b), (PVC, &env.b)] {
        server
            .create("pods", "default", serde_json::json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}))
            .ok();
        let out = assert_ok(
            &env.kubectl(ADMIN_KEY, prefix, &["get", "pods", "-o", "name"])
                .await,
        );
        assert!(out.contains("pod/web"), "{prefix}: {out}");
        let exec = env
            .kubectl(ADMIN_KEY, prefix, &["exec", "web", "--", "echo", "hi"])
            .await;
        assert!(
            stdout(&exec).contains(kubegate_testkit::EXEC_STDOUT_PREFIX),
            "{prefix}: {} {}",
            stdout(&exec),
            stderr(&exec)
        );
        // A watch sees an event created while it is open.
        let kc = env.kubeconfig(ADMIN_KEY, prefix);
        let mut watch = tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kc)
            .arg("--cache-dir")
            .arg(env.dir.join("kubectl-cache"))
            .args([
                "get",
                "configmaps",
                "-w",
                "-o",
                "name",
                "--request-timeout=0",
            ])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
            watch.stdout.take().unwrap(),
        ));
        let name = format!("watched-{}", uuid::Uuid::new_v4().simple());
        let found = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            let mut created = false;
            loop {
                if !created {
                    // Create once the watch is established: kubectl prints nothing for an empty
                    // list, so poll the upstream's record of an open watch.
                    if server
                        .requests()
                        .iter()
                        .any(|r| r.verb == "watch" && r.path.ends_with("/configmaps"))
                    {
                        server
                            .create(
                                "configmaps",
                                "default",
                                serde_json::json!({"metadata": {"name": name}}),
                            )
                            .unwrap();
                        created = true;
                    } else {
                        tokio::task::yield_now().await;
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        continue;
                    }
                }
                match lines.next_line().await.unwrap() {
                    Some(line) if line.contains(&name) => return true,
                    Some(_) => continue,
                    None => return false,
                }
            }
        })
        .await;
        assert_eq!(found, Ok(true), "{prefix}: watch event not seen");
        let _ = watch.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn smuggled_identity_headers_do_not_reach_upstreams() {
    let env = Env::start().await;
    let client = env.client();
    let url = format!("{}{A}/api/v1/namespaces/default/configmaps", env.url);
    let reply = client
        .get(
            &url,
            VIEWER_KEY,
            &[
                ("x-remote-user", "admin"),
                ("x-remote-group", "system:masters"),
            ],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = client
        .get(&url, VIEWER_KEY, &[("impersonate-user", "admin")])
        .await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    let seen = env.a.requests();
    for r in seen.iter().filter(|r| r.path.ends_with("/configmaps")) {
        assert_eq!(r.effective_user().unwrap().name, "viewer");
        for (name, _) in r.headers.iter() {
            let n = name.as_str();
            assert!(!n.starts_with("x-remote-"), "{n} reached the upstream");
        }
        let auth = r.headers.get("authorization").unwrap().to_str().unwrap();
        assert!(
            !auth.contains(VIEWER_KEY),
            "the client's credential reached the upstream"
        );
    }
    // Two Authorization headers are refused outright.
    let req = http::Request::get(&url)
        .header("authorization", format!("Bearer {VIEWER_KEY}"))
        .header("authorization", format!("Bearer {ADMIN_KEY}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(client.send(req).await.status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_kube_errors() {
    let env = Env::start().await;
    let client = env.client();
    let url = |p: &str| format!("{}{p}", env.url);
    let unauthorized = client
        .get(&url("/kubernetes/cluster/a/api/v1/pods"), "kgak_nope", &[])
        .await;
    assert_eq!(unauthorized.status, 401);
    assert_eq!(
        unauthorized.body,
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"Unauthorized\",\"reason\":\"Unauthorized\",\"code\":401}\n"
    );
    let dcet = url("/kubernetes/management/apis/management.loft.sh/v1/directclusterendpointtokens");
    let malformed = client
        .post(&dcet, ADMIN_KEY, "application/json", b"{not json".to_vec())
        .await;
    assert_eq!(malformed.status, 400, "{}", malformed.body);
    assert!(malformed.body.contains("\"reason\":\"BadRequest\""));
    // kube's `transformDecodeError` wording; the parser's own words are serde's.
    assert!(
        malformed.body.contains(
            "DirectClusterEndpointToken in version \\\"v1\\\" cannot be handled as a DirectClusterEndpointToken: "
        ),
        "{}",
        malformed.body
    );
    let wrong_type = client
        .post(&dcet, ADMIN_KEY, "text/plain", b"{}".to_vec())
        .await;
    assert_eq!(wrong_type.status, 415, "{}", wrong_type.body);
    let huge = client
        .post(
            &dcet,
            ADMIN_KEY,
            "application/json",
            vec![b' '; 4 * 1024 * 1024],
        )
        .await;
    assert_eq!(huge.status, 413, "{}", huge.body);
    assert!(
        huge.body
            .contains("\"message\":\"Request entity too large: limit is 3145728\",\"reason\":\"RequestEntityTooLarge\""),
        "{}",
        huge.body
    );
    let strict = client
        .post(
            &format!("{dcet}?fieldValidation=Strict"),
            ADMIN_KEY,
            "application/json",
            br#"{"spec":{"bogus":1}}"#.to_vec(),
        )
        .await;
    assert_eq!(strict.status, 400, "{}", strict.body);
    assert!(
        strict
            .body
            .contains("DirectClusterEndpointToken in version \\\"v1\\\" cannot be handled as a DirectClusterEndpointToken: strict decoding error: unknown field \\\"spec.bogus\\\""),
        "{}",
        strict.body
    );
    let unknown = client
        .get(
            &url("/kubernetes/management/apis/management.loft.sh/v1/widgets"),
            ADMIN_KEY,
            &[],
        )
        .await;
    assert_eq!(unknown.status, 404);
    // Paths kube-apiserver has no route for: a cluster-scoped resource inside a namespace, a
    // namespaced object named outside one. The cross-namespace list is a route.
    let v1 = "/kubernetes/management/apis/management.loft.sh/v1";
    for (path, status) in [
        ("/namespaces/p-p1/clusters", 404),
        ("/namespaces/p-p1/clusters/a", 404),
        ("/namespaces/p-p1/ownedaccesskeys", 404),
        ("/spaceinstances/s1", 404),
        ("/spaceinstances", 200),
        ("/spaceinstances?fieldSelector=metadata.name%3Ds1", 200),
        ("/namespaces/p-p1/spaceinstances/s1", 200),
    ] {
        let reply = client
            .get(&url(&format!("{v1}{path}")), ADMIN_KEY, &[])
            .await;
        assert_eq!(reply.status, status, "{path}: {}", reply.body);
        if status == 404 {
            assert_eq!(
                reply.body.trim_end(),
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the server could not find the requested resource","reason":"NotFound","details":{},"code":404}"#
            );
        }
    }
    let not_a_target = client
        .get(&url("/kubernetes/cluster/zzz/api"), ADMIN_KEY, &[])
        .await;
    assert_eq!(not_a_target.status, 404);
    let traversal = client
        .get(&url("/kubernetes/cluster/a/%2e%2e/b/api"), ADMIN_KEY, &[])
        .await;
    assert_eq!(traversal.status, 400);
    let nowhere = client.get(&url("/nowhere"), ADMIN_KEY, &[]).await;
    assert_eq!(
        (nowhere.status, nowhere.body.as_str()),
        (404, "404 page not found\n")
    );
}

/// A target nobody configured is kube's NotFound for the object Loft would have looked up,
/// for a caller allowed to use such targets; a caller without that access gets the same 403
/// for it as for a target that exists, so target names cannot be probed.
#[tokio::test(flavor = "multi_thread")]
async fn unknown_targets_are_not_found_for_those_allowed_and_forbidden_for_others() {
    let env = Env::start().await;
    let client = env.client();
    let url = |p: &str| format!("{}{p}", env.url);
    const MANAGEMENT: &str = "management.loft.sh";
    const STORAGE: &str = "storage.loft.sh";
    // Path, then the NotFound's group, resource and name.
    #[rustfmt::skip]
    let cases = [
        ("/kubernetes/cluster/zzz/api",                    MANAGEMENT, "clusters",                "zzz"),
        ("/kubernetes/project/p1/space/nope/api",          MANAGEMENT, "spaceinstances",          "nope"),
        ("/kubernetes/project/p9/space/s1/api",            MANAGEMENT, "spaceinstances",          "s1"),
        ("/kubernetes/project/p1/virtualcluster/nope/api", MANAGEMENT, "virtualclusterinstances", "nope"),
        ("/kubernetes/virtualcluster/a/team/nope/api",     STORAGE,    "virtualclusters",         "nope"),
        ("/kubernetes/virtualcluster/a/elsewhere/vc1/api", STORAGE,    "virtualclusters",         "vc1"),
        ("/kubernetes/virtualcluster/zzz/team/vc1/api",    MANAGEMENT, "clusters",                "zzz"),
    ];
    for (path, group, resource, name) in cases {
        let body = format!(
            r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure","message":"{resource}.{group} \"{name}\" not found","reason":"NotFound","details":{{"name":"{name}","group":"{group}","kind":"{resource}"}},"code":404}}"#
        );
        let reply = client.get(&url(path), ADMIN_KEY, &[]).await;
        assert_eq!(
            (reply.status, reply.body.trim_end()),
            (404, body.as_str()),
            "{path}"
        );
    }
    // spaceuser may use space s1 only: a cluster that exists and one that does not get the
    // same refusal, naming only what the request itself named.
    let refusal = |cluster: &str| {
        format!(
            r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure","message":"forbidden: User \"spaceuser\" cannot get path \"/api\": access to cluster \"{cluster}\" is not granted","reason":"Forbidden","details":{{}},"code":403}}"#
        )
    };
    for cluster in ["a", "zzz"] {
        let reply = client
            .get(
                &url(&format!("/kubernetes/cluster/{cluster}/api")),
                SPACE_KEY,
                &[],
            )
            .await;
        assert_eq!(
            (reply.status, reply.body.trim_end()),
            (403, refusal(cluster).as_str()),
            "{cluster}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn owned_access_keys_and_narrowing() {
    let env = Env::start().await;
    let client = env.client();
    let keys = format!("{}/ownedaccesskeys", v1_url(&env));
    let created = client
        .post(
            &keys,
            SCOPED_KEY,
            "application/json",
            br#"{"metadata":{"name":"mine"},"spec":{"scope":{"clusters":[{"cluster":"a"}]}}}"#
                .to_vec(),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let object: serde_json::Value = serde_json::from_str(&created.body).unwrap();
    let key = object["spec"]["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("kgak_"));
    // The new key works at once and carries its scope.
    assert_ok(&env.kubectl(&key, A, &["get", "pods"]).await);
    assert!(
        !env.kubectl(&key, B, &["get", "pods"])
            .await
            .status
            .success()
    );
    let reply = client
        .get(&format!("{}{B}/api/v1/pods", env.url), &key, &[])
        .await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    // Listing never echoes the key.
    let list = client.get(&keys, SCOPED_KEY, &[]).await;
    assert_eq!(list.status, 200);
    assert!(list.body.contains("\"mine\"") && !list.body.contains(&key));
    // A broader scope than the caller's is refused.
    let broader = client
        .post(
            &keys,
            SCOPED_KEY,
            "application/json",
            br#"{"metadata":{"name":"wider"},"spec":{"scope":{"clusters":[{"cluster":"*"}]}}}"#
                .to_vec(),
        )
        .await;
    assert_eq!(broader.status, 403, "{}", broader.body);
    // Login keys are the gateway's to make (they are bounded apart, and not counted against
    // a user's 1,000 keys): the API makes User and Other keys only.
    let login = client
        .post(
            &keys,
            SCOPED_KEY,
            "application/json",
            br#"{"metadata":{"name":"sneaky"},"spec":{"type":"Login"}}"#.to_vec(),
        )
        .await;
    assert_eq!(login.status, 422, "{}", login.body);
    // The type is checked before the scope: a Login key asked for with a broader scope is
    // refused for its type (before, the scope comparison ran first and answered 403).
    let wide_login = client
        .post(
            &keys,
            SCOPED_KEY,
            "application/json",
            br#"{"metadata":{"name":"sneaky-wide"},"spec":{"type":"Login","scope":{"clusters":[{"cluster":"*"}]}}}"#
                .to_vec(),
        )
        .await;
    assert_eq!(
        (wide_login.status, wide_login.body.trim_end()),
        (
            422,
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"OwnedAccessKey.management.loft.sh \"sneaky-wide\" is invalid: spec.type: Unsupported value: \"Login\": supported values: \"\", \"Other\", \"User\"","reason":"Invalid","details":{"name":"sneaky-wide","group":"management.loft.sh","kind":"OwnedAccessKey","causes":[{"reason":"FieldValueNotSupported","message":"Unsupported value: \"Login\": supported values: \"\", \"Other\", \"User\"","field":"spec.type"}]},"code":422}"#
        )
    );
    let bad_name = client
        .post(
            &keys,
            SCOPED_KEY,
            "application/json",
            br#"{"metadata":{"name":"Bad_Name"}}"#.to_vec(),
        )
        .await;
    assert_eq!(
        (bad_name.status, bad_name.body.trim_end()),
        (
            422,
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"OwnedAccessKey.management.loft.sh \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')","reason":"Invalid","details":{"name":"Bad_Name","group":"management.loft.sh","kind":"OwnedAccessKey","causes":[{"reason":"FieldValueInvalid","message":"Invalid value: \"Bad_Name\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')","field":"metadata.name"}]},"code":422}"#
        )
    );
    // An owned key is its creator's: asking for another user's (or a team's, or more groups)
    // is refused, never answered with a key for the caller.
    let for_bob = client
        .post(
            &keys,
            ADMIN_KEY,
            "application/json",
            br#"{"metadata":{"name":"for-bob"},"spec":{"user":"bob","groups":["system:masters"]}}"#
                .to_vec(),
        )
        .await;
    assert_eq!(for_bob.status, 422, "{}", for_bob.body);
    assert!(
        for_bob.body.contains(
            r#"is invalid: [spec.user: Forbidden: an owned access key belongs to the user who creates it, spec.groups: Forbidden: an owned access key carries its owner's groups, no others]"#
        ),
        "{}",
        for_bob.body
    );
    // Naming oneself is fine.
    let own = client
        .post(
            &keys,
            ADMIN_KEY,
            "application/json",
            br#"{"metadata":{"name":"for-me"},"spec":{"user":"admin"}}"#.to_vec(),
        )
        .await;
    assert_eq!(own.status, 201, "{}", own.body);
    // A scope too large to fit a token is refused before it is compared with the caller's.
    let clusters: Vec<serde_json::Value> = (0..400)
        .map(|i| serde_json::json!({"cluster": format!("cluster-number-{i}")}))
        .collect();
    let huge = serde_json::json!({"metadata": {"name": "huge"}, "spec": {"scope": {"clusters": clusters}}});
    let huge = client
        .post(
            &keys,
            ADMIN_KEY,
            "application/json",
            huge.to_string().into_bytes(),
        )
        .await;
    assert_eq!(huge.status, 422, "{}", huge.body);
    assert!(
        huge.body
            .contains("spec.scope: Too long: may not be more than 8192 bytes"),
        "{}",
        huge.body
    );
    assert!(
        login
            .body
            .contains(r#"spec.type: Unsupported value: \"Login\""#),
        "{}",
        login.body
    );
    // A ttl whose expiry would not fit in an i64 is refused, not stored wrapped around (the
    // key then looked created for 292 billion years and was expired from its first use).
    let forever = client
        .post(
            &keys,
            SCOPED_KEY,
            "application/json",
            br#"{"metadata":{"name":"forever"},"spec":{"ttl":9223372036854775807}}"#.to_vec(),
        )
        .await;
    assert_eq!(
        (forever.status, forever.body.trim_end()),
        (
            400,
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"spec.ttl 9223372036854775807 is too large: the key would expire after the year 292277026596","reason":"BadRequest","code":400}"#
        )
    );
    // A key is stored with the whole state on every change: kubegate keeps each one small.
    let big = format!(
        r#"{{"metadata":{{"name":"big"}},"spec":{{"description":"{}"}}}}"#,
        "d".repeat(70 * 1024)
    );
    let too_big = client
        .post(&keys, SCOPED_KEY, "application/json", big.into_bytes())
        .await;
    assert_eq!(
        (too_big.status, too_big.body.trim_end()),
        (
            400,
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the access key is too large to store: 72043 bytes, at most 65536 (spec.displayName, spec.description and spec.scope)","reason":"BadRequest","code":400}"#
        )
    );
    // Deleting revokes.
    let del = http::Request::delete(format!("{keys}/mine"))
        .header("authorization", format!("Bearer {SCOPED_KEY}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let deleted = client.send(del).await;
    assert_eq!(deleted.status, 200);
    // kube-apiserver's finalizeDelete Status, uid included; audited as a Status too.
    let uid = object["metadata"]["uid"].as_str().unwrap();
    assert_eq!(
        deleted.body.trim_end(),
        format!(
            r#"{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Success","details":{{"name":"mine","group":"management.loft.sh","kind":"ownedaccesskeys","uid":"{uid}"}}}}"#
        )
    );
    let event = audit_events(&env, "/ownedaccesskeys/mine")
        .into_iter()
        .find(|e| e["verb"] == "delete")
        .expect("the delete is audited");
    assert_eq!(
        event["responseStatus"],
        serde_json::json!({"metadata": {}, "status": "Success", "details": {"name": "mine", "group": "management.loft.sh", "kind": "ownedaccesskeys", "uid": uid}, "code": 200})
    );
    let after = env.kubectl(&key, A, &["get", "pods"]).await;
    assert!(
        stderr(&after).contains("Unauthorized"),
        "{}",
        stderr(&after)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ops_endpoints_and_audit() {
    let env = Env::start().await;
    let client = env.client();
    assert_eq!(
        client
            .get(&format!("{}/healthz", env.url), "", &[])
            .await
            .body,
        "ok"
    );
    assert_eq!(
        client
            .get(&format!("{}/readyz", env.url), "", &[])
            .await
            .status,
        200
    );
    // Upstream reachability is reported in the verbose form once the first probe ran.
    let mut verbose = String::new();
    for _ in 0..100 {
        verbose = client
            .get(&format!("{}/readyz?verbose", env.url), "", &[])
            .await
            .body;
        if verbose.contains("[+]upstreams") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(verbose.contains("[+]policy ok"), "{verbose}");
    // Counted, never named: anyone may ask.
    let total = env.gateway.shared().upstream_health.snapshot().len();
    assert!(total > 0);
    assert!(
        verbose.contains(&format!("[+]upstreams: {total} of {total} reachable")),
        "{verbose}"
    );
    assert!(
        !verbose.contains("cluster/a") && !verbose.contains("127.0.0.1"),
        "{verbose}"
    );
    // The platform's `/version` is Loft's `auth.Version`, for anyone (CLIs ask before login).
    let version = client.get(&format!("{}/version", env.url), "", &[]).await;
    assert_eq!(version.status, 200);
    let pkg = env!("CARGO_PKG_VERSION");
    let (major, minor) = (
        env!("CARGO_PKG_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MINOR"),
    );
    assert_eq!(
        version.body,
        format!(
            r#"{{"version":"v{pkg}","major":"{major}","minor":"{minor}","kubeVersion":"v1.37.0-kubegate.{pkg}","newerVersion":"","shouldUpgrade":false}}"#
        )
    );
    assert_eq!(
        client
            .get(&format!("{}/metrics", env.url), "", &[])
            .await
            .status,
        401
    );
    assert_ok(&env.kubectl(ADMIN_KEY, A, &["get", "pods"]).await);
    let metrics = client
        .get(&format!("{}/metrics", env.url), ADMIN_KEY, &[])
        .await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.body.contains("kubegate_requests_total"),
        "{}",
        metrics.body
    );
    env.gateway.flush_audit();
    let audit = std::fs::read_to_string(env.dir.join("state/audit.log")).unwrap();
    let event: serde_json::Value = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["objectRef"]["resource"] == "pods")
        .expect("an audit event for the pods list");
    assert_eq!(event["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(event["user"]["username"], "admin");
    assert!(
        !audit.contains(ADMIN_KEY),
        "credentials never reach the audit log"
    );
    // The audit log's writer is counted: every line written so far, and no loss. (This
    // request's own event is recorded once its response has been sent.)
    let metrics = client
        .get(&format!("{}/metrics", env.url), ADMIN_KEY, &[])
        .await;
    let counter = |name: &str| -> u64 {
        metrics
            .body
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{}", metrics.body))
    };
    assert_eq!(
        counter("kubegate_audit_events_total"),
        audit.lines().count() as u64
    );
    assert_eq!(counter("kubegate_audit_errors_total"), 0);
    assert_eq!(counter("kubegate_audit_queue_full_total"), 0);
}

/// Audit events of `audit.log` whose request URI contains `needle`, in order.
fn audit_events(env: &Env, needle: &str) -> Vec<serde_json::Value> {
    env.gateway.flush_audit();
    std::fs::read_to_string(env.dir.join("state/audit.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("one JSON event per line"))
        .filter(|e| e["requestURI"].as_str().is_some_and(|u| u.contains(needle)))
        .collect()
}

/// kube-apiserver's authorization filter annotates every request's audit event with its
/// decision and the authorizer's reason; so does the gateway, for targets and for its own API.
#[tokio::test(flavor = "multi_thread")]
async fn audit_events_carry_kubes_authorization_decision_and_reason() {
    let env = Env::start().await;
    let client = env.client();
    let get = |prefix: &str, path: &str, key: &'static str| {
        let url = format!("{}{prefix}{path}", env.url);
        let client = &client;
        async move { client.get(&url, key, &[]).await.status }
    };
    let annotations = |needle: &str| {
        let events = audit_events(&env, needle);
        assert_eq!(events.len(), 1, "{needle}: {events:?}");
        let a = &events[0]["annotations"];
        (
            a["authorization.k8s.io/decision"]
                .as_str()
                .map(str::to_owned),
            a["authorization.k8s.io/reason"].as_str().map(str::to_owned),
        )
    };
    let allowed = |reason: &str| (Some("allow".to_owned()), Some(reason.to_owned()));
    let forbidden = |reason: &str| (Some("forbid".to_owned()), Some(reason.to_owned()));

    // A cluster: RBAC's reason names the binding, the role and the subject.
    assert_eq!(
        get(A, "/api/v1/namespaces/default/pods", VIEWER_KEY).await,
        200
    );
    assert_eq!(
        annotations("/cluster/a/api/v1/namespaces/default/pods"),
        allowed(
            r#"RBAC: allowed by ClusterRoleBinding "viewers" of ClusterRole "kubegate:viewer" to User "viewer""#
        )
    );
    // Refused by RBAC, which has no reason to give.
    assert_eq!(
        get(A, "/api/v1/namespaces/default/secrets", VIEWER_KEY).await,
        403
    );
    assert_eq!(
        annotations("/cluster/a/api/v1/namespaces/default/secrets"),
        forbidden("")
    );
    // Refused by the key's scope (cluster a only), with the scope's reason.
    assert_eq!(
        get(B, "/api/v1/namespaces/default/pods", CLUSTER_ONLY_KEY).await,
        403
    );
    assert_eq!(
        annotations("/cluster/b/api/v1/namespaces/default/pods"),
        forbidden("the access key's scope does not allow this request to cluster \"b\"")
    );
    // RBAC allowed it and the project space's fence refused it: the later decision stands.
    assert_eq!(
        get(SPACE, "/api/v1/namespaces/elsewhere/pods", SPACE_KEY).await,
        403
    );
    assert_eq!(
        annotations("/space/s1/api/v1/namespaces/elsewhere/pods"),
        forbidden(r#"requests to space "s1" of project "p1" must stay in namespace "s1""#)
    );
    // Grafana: allowed by RBAC, and refused to a key scoped to another cluster.
    assert_ne!(get("/grafana/b", "/api/health?admin", ADMIN_KEY).await, 403);
    assert_eq!(
        annotations("/grafana/b/api/health?admin"),
        allowed(
            r#"RBAC: allowed by ClusterRoleBinding "admins" of ClusterRole "kubegate:admin" to User "admin""#
        )
    );
    assert_eq!(
        get("/grafana/b", "/api/health?scoped", SCOPED_KEY).await,
        403
    );
    assert_eq!(
        annotations("/grafana/b/api/health?scoped"),
        forbidden(r#"access to the Grafana of cluster "b" is not granted"#)
    );
    // The management API.
    assert_eq!(
        get(MGMT, "/apis/management.loft.sh/v1/clusters", ADMIN_KEY).await,
        200
    );
    assert_eq!(
        annotations("/management/apis/management.loft.sh/v1/clusters"),
        // Listing clusters is everyone's (each sees the ones they may use).
        allowed(
            r#"RBAC: allowed by ClusterRoleBinding "kubegate:self-service" of ClusterRole "kubegate:self-service" to Group "system:authenticated""#
        )
    );
    assert_eq!(
        get(MGMT, "/apis/management.loft.sh/v1/teams", CLUSTER_ONLY_KEY).await,
        403
    );
    assert_eq!(
        annotations("/management/apis/management.loft.sh/v1/teams"),
        forbidden("the access key's scope does not allow this request")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_levels_are_per_target_and_never_record_secrets_or_streams() {
    require_kubectl();
    let env = Env::start().await;
    let mut config = env.config.clone();
    config.clusters[0].audit_level = Some(kubegate_proxy::AuditLevel::RequestResponse);
    config.projects[0].spaces[0].audit_level = Some(kubegate_proxy::AuditLevel::Request);
    env.gateway.reload(config).await.unwrap();

    // `create -f` sends JSON; kubectl's `create configmap` generator sends protobuf.
    for (prefix, name) in [(A, "audited-a"), (B, "audited-b"), (SPACE, "audited-s1")] {
        let ns = if prefix == SPACE { "s1" } else { "default" };
        let manifest = env.dir.join(format!("{name}.yaml"));
        std::fs::write(
            &manifest,
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {ns}}}\ndata: {{k: v}}\n"),
        )
        .unwrap();
        let manifest = manifest.to_str().unwrap();
        assert_ok(
            &env.kubectl(ADMIN_KEY, prefix, &["create", "-f", manifest])
                .await,
        );
    }
    assert_ok(
        &env.kubectl(
            ADMIN_KEY,
            A,
            &["create", "configmap", "generated", "--from-literal=k=v"],
        )
        .await,
    );
    // A secret through the RequestResponse target, and a pod to exec into and read logs of.
    assert_ok(
        &env.kubectl(
            ADMIN_KEY,
            A,
            &[
                "create",
                "secret",
                "generic",
                "creds",
                "--from-literal=password=hunter2",
            ],
        )
        .await,
    );
    env.a
        .create("pods", "default", serde_json::json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}))
        .unwrap();
    let exec = env
        .kubectl(ADMIN_KEY, A, &["exec", "web", "--", "echo", "hi"])
        .await;
    assert!(stdout(&exec).contains(kubegate_testkit::EXEC_STDOUT_PREFIX));

    let created = |needle: &str| {
        audit_events(&env, needle)
            .into_iter()
            .find(|e| e["verb"] == "create")
            .unwrap_or_else(|| panic!("no create event for {needle}"))
    };
    // cluster/a records both bodies, exactly as they crossed the gateway.
    let a = created("/kubernetes/cluster/a/api/v1/namespaces/default/configmaps");
    assert_eq!(a["level"], "RequestResponse");
    assert_eq!(a["requestObject"]["metadata"]["name"], "audited-a", "{a}");
    assert_eq!(a["requestObject"]["data"]["k"], "v");
    assert_eq!(a["responseObject"]["metadata"]["name"], "audited-a");
    assert!(a["responseObject"]["metadata"]["resourceVersion"].is_string());
    // Protobuf cannot be shown as JSON without the schema; the event says it was left out.
    // The generator asks for protobuf back too, and gets it, as from kube-apiserver.
    let generated: Vec<_> = audit_events(
        &env,
        "/kubernetes/cluster/a/api/v1/namespaces/default/configmaps",
    )
    .into_iter()
    .filter(|e| e["verb"] == "create" && e.get("requestObject").is_none())
    .collect();
    assert_eq!(generated.len(), 1, "{generated:?}");
    let generated = &generated[0];
    assert_eq!(
        generated["annotations"]["kubegate.dev/request-object"],
        "omitted: not JSON"
    );
    assert_eq!(
        generated["annotations"]["kubegate.dev/response-object"],
        "omitted: not JSON"
    );
    assert!(generated.get("responseObject").is_none(), "{generated}");
    // cluster/b keeps the default.
    let b = created("/kubernetes/cluster/b/api/v1/namespaces/default/configmaps");
    assert_eq!(b["level"], "Metadata");
    assert!(b.get("requestObject").is_none() && b.get("responseObject").is_none());
    // The space records the request only.
    let s = created("/kubernetes/project/p1/space/s1/api/v1/namespaces/s1/configmaps");
    assert_eq!(s["level"], "Request");
    assert_eq!(s["requestObject"]["metadata"]["name"], "audited-s1");
    assert!(s.get("responseObject").is_none());
    // Secrets and exec streams stay at Metadata even on the RequestResponse target.
    let secret = created("/kubernetes/cluster/a/api/v1/namespaces/default/secrets");
    assert_eq!(secret["level"], "Metadata");
    let exec_events = audit_events(&env, "/pods/web/exec");
    assert!(!exec_events.is_empty());
    assert!(
        exec_events
            .iter()
            .all(|e| e["level"] == "Metadata" && e.get("requestObject").is_none()),
        "{exec_events:?}"
    );
    env.gateway.flush_audit();
    let log = std::fs::read_to_string(env.dir.join("state/audit.log")).unwrap();
    assert!(!log.contains("hunter2"), "a secret reached the audit log");
    assert!(!log.contains(&base64::engine::general_purpose::STANDARD.encode("hunter2")));
    assert!(!log.contains(ADMIN_KEY));
}

/// kubectl with its WebSocket transports turned off, so exec and port-forward use SPDY/3.1.
fn spdy_kubectl(env: &Env, prefix: &str, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(env.kubeconfig(ADMIN_KEY, prefix))
        .arg("--cache-dir")
        .arg(env.dir.join("kubectl-cache"))
        .args(args)
        .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")
        .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")
        .kill_on_drop(true);
    cmd
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_attach_and_port_forward_over_spdy_through_clusters_and_virtual_clusters() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    require_kubectl();
    let env = Env::start().await;
    for (prefix, server) in [(A, &env.a), (LEGACY_VC, &env.b)] {
        server
            .create("pods", "default", serde_json::json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "c", "image": "x"}]}, "status": {"phase": "Running"}}))
            .ok();
        // exec, with stdin echoed back.
        let mut exec = spdy_kubectl(&env, prefix, &["exec", "-i", "web", "--", "cat"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = exec.stdin.take().unwrap();
        stdin.write_all(b"ping over spdy\n").await.unwrap();
        drop(stdin);
        let out = tokio::time::timeout(std::time::Duration::from_secs(30), exec.wait_with_output())
            .await
            .expect("kubectl exec finishes")
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{prefix}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(kubegate_testkit::EXEC_STDOUT_PREFIX),
            "{prefix}: {stdout}"
        );
        assert!(stdout.contains("ping over spdy"), "{prefix}: {stdout}");
        let upgrade = server
            .last_request_to("/pods/web/exec")
            .expect("the exec reached the upstream");
        assert_eq!(upgrade.headers["upgrade"], "SPDY/3.1");
        assert_eq!(upgrade.effective_user().unwrap().name, "admin");

        // The command's exit code reaches kubectl through the gateway.
        let out = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            spdy_kubectl(&env, prefix, &["exec", "web", "--", "sh", "-c", "exit 5"]).output(),
        )
        .await
        .expect("kubectl exec finishes")
        .unwrap();
        assert_eq!(
            out.status.code(),
            Some(5),
            "{prefix}: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        // attach, over SPDY and over WebSocket (kubectl's default).
        for websockets in [false, true] {
            let mut cmd = spdy_kubectl(&env, prefix, &["attach", "web"]);
            cmd.env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", websockets.to_string());
            let out = tokio::time::timeout(std::time::Duration::from_secs(30), cmd.output())
                .await
                .expect("kubectl attach finishes")
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                stdout.contains(kubegate_testkit::EXEC_STDOUT_PREFIX),
                "{prefix} websockets={websockets}: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }

        // port-forward over SPDY, and over kubectl's default WebSocket tunnel (SPDY frames in
        // WebSocket messages): the testkit echoes every forwarded connection.
        for websockets in [false, true] {
            let mut cmd = spdy_kubectl(&env, prefix, &["port-forward", "pod/web", ":8080"]);
            cmd.env("KUBECTL_PORT_FORWARD_WEBSOCKETS", websockets.to_string());
            let mut forward = cmd
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut lines = tokio::io::BufReader::new(forward.stdout.take().unwrap()).lines();
            let line = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
                .await
                .expect("kubectl port-forward starts")
                .unwrap()
                .unwrap_or_default();
            // "Forwarding from 127.0.0.1:41234 -> 8080"
            let port: u16 = line
                .split("127.0.0.1:")
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("{prefix}: unexpected output {line:?}"));
            let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            conn.write_all(b"hello through kubegate").await.unwrap();
            let mut echoed = vec![0u8; 22];
            tokio::time::timeout(
                std::time::Duration::from_secs(30),
                conn.read_exact(&mut echoed),
            )
            .await
            .unwrap_or_else(|_| panic!("{prefix} websockets={websockets}: no echo"))
            .unwrap();
            assert_eq!(
                echoed, b"hello through kubegate",
                "{prefix} websockets={websockets}"
            );
            let forwarded = server
                .requests()
                .into_iter()
                .rev()
                .find(|r| r.path.ends_with("/pods/web/portforward"))
                .expect("the port-forward reached the upstream");
            let expected = if websockets { "websocket" } else { "SPDY/3.1" };
            assert_eq!(forwarded.headers["upgrade"], expected);
            drop(conn);
            let _ = forward.kill().await;
        }
    }
}

/// Loft's AccessKeySpec lifecycle through the API: a key created `disabled` is kept and
/// refused; a key past its `ttl` is refused; a token minted without `spec.scope` inherits the
/// minting key's scope (spec/loft-api.md §2, §5).
#[tokio::test(flavor = "multi_thread")]
async fn disabled_and_expired_keys_are_refused_and_minting_inherits_the_scope() {
    let env = Env::start().await;
    let client = env.client();
    let api = v1_url(&env);
    let create = |body: &'static str| {
        let (client, url) = (&client, format!("{api}/ownedaccesskeys"));
        async move {
            let reply = client
                .post(
                    &url,
                    ADMIN_KEY,
                    "application/json",
                    body.as_bytes().to_vec(),
                )
                .await;
            assert_eq!(reply.status, 201, "{}", reply.body);
            let object: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
            object["spec"]["key"].as_str().unwrap().to_owned()
        }
    };
    let pods = format!("{}{A}/api/v1/namespaces/default/pods", env.url);

    let disabled = create(r#"{"metadata":{"name":"off"},"spec":{"disabled":true}}"#).await;
    let reply = client.get(&pods, &disabled, &[]).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    // Kept: it is still listed.
    let list = client
        .get(&format!("{api}/ownedaccesskeys"), ADMIN_KEY, &[])
        .await;
    assert!(list.body.contains(r#""name":"off""#), "{}", list.body);

    // Expiry is kept in whole seconds from a creation time rounded down, so a TTL of n seconds
    // guarantees at least n − 1 of them: 6 leaves the first request five seconds on a loaded
    // machine. Then it is refused within a second or two of its expiry.
    let short = create(r#"{"metadata":{"name":"short"},"spec":{"ttl":6}}"#).await;
    assert_eq!(client.get(&pods, &short, &[]).await.status, 200);
    client
        .until_status_turns(
            &pods,
            &short,
            (200, 401),
            std::time::Duration::from_secs(20),
            "the key outlived its TTL",
        )
        .await;

    // SCOPED_KEY admits cluster a (and the management API); a token it mints with no scope
    // of its own carries that scope, so cluster b stays closed to it.
    let minted = client
        .post(
            &format!("{api}/directclusterendpointtokens"),
            SCOPED_KEY,
            "application/json",
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(minted.status, 201, "{}", minted.body);
    let minted: serde_json::Value = serde_json::from_str(&minted.body).unwrap();
    let token = minted["status"]["token"].as_str().unwrap();
    let on_a = client.get(&pods, token, &[]).await;
    assert_eq!(on_a.status, 200, "{}", on_a.body);
    let on_b = client
        .get(
            &format!("{}{B}/api/v1/namespaces/default/pods", env.url),
            token,
            &[],
        )
        .await;
    assert_eq!(on_b.status, 403, "{}", on_b.body);
    let with_key = client
        .get(
            &format!("{}{B}/api/v1/namespaces/default/pods", env.url),
            SCOPED_KEY,
            &[],
        )
        .await;
    assert_eq!(with_key.status, 403, "{}", with_key.body);
}

/// A cluster's direct endpoint reaches clients as Loft's annotations on its `Cluster`: the
/// endpoint, and how to trust it (`-ca-data`, base64 PEM; or `-insecure`). The settings are
/// checked at load.
#[tokio::test(flavor = "multi_thread")]
async fn direct_endpoint_annotations_tell_clients_where_and_how_to_trust() {
    use base64::Engine;
    let env = Env::start().await;
    let client = env.client();
    let ca = base64::engine::general_purpose::STANDARD.encode(env.a.ca_pem());
    let annotations = |insecure: bool, ca: Option<&str>| {
        let mut config = env.config.clone();
        let a = &mut config.clusters[0];
        a.direct_endpoint = Some("https://agent-a.example:8443".into());
        a.direct_endpoint_ca_data = ca.map(str::to_owned);
        a.direct_endpoint_insecure = insecure;
        let (gateway, client, url) = (&env.gateway, &client, &env.url);
        async move {
            gateway.reload(config).await.unwrap();
            let reply = client
                .get(
                    &format!("{url}/kubernetes/management/apis/management.loft.sh/v1/clusters/a"),
                    ADMIN_KEY,
                    &[],
                )
                .await;
            assert_eq!(reply.status, 200, "{}", reply.body);
            let cluster: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
            cluster["metadata"]["annotations"].clone()
        }
    };
    assert_eq!(
        annotations(false, Some(&ca)).await,
        serde_json::json!({
            "loft.sh/direct-cluster-endpoint": "https://agent-a.example:8443",
            "loft.sh/direct-cluster-endpoint-ca-data": ca,
        })
    );
    assert_eq!(
        annotations(true, None).await,
        serde_json::json!({
            "loft.sh/direct-cluster-endpoint": "https://agent-a.example:8443",
            "loft.sh/direct-cluster-endpoint-insecure": "true",
        })
    );

    let base = "listen: 127.0.0.1:0\nstateDir: /tmp/unused\nclusters:\n  - name: a\n    upstream: {server: \"https://a\"}\n";
    let not_pem = base64::engine::general_purpose::STANDARD.encode("not a certificate");
    #[rustfmt::skip]
    let cases = [
        (format!("    directEndpointCaData: {ca}\n"), Some("clusters[0].directEndpoint")),
        ("    directEndpointInsecure: true\n".to_owned(), Some("clusters[0].directEndpoint")),
        (format!("    directEndpoint: https://x\n    directEndpointCaData: {ca}\n    directEndpointInsecure: true\n"), Some("clusters[0].directEndpointInsecure")),
        (format!("    directEndpoint: https://x\n    directEndpointCaData: {not_pem}\n"), Some("clusters[0].directEndpointCaData")),
        ("    directEndpoint: https://x\n    directEndpointCaData: '%%%'\n".to_owned(), Some("clusters[0].directEndpointCaData")),
        (format!("    directEndpoint: https://x\n    directEndpointCaData: {ca}\n"), None),
        ("    directEndpoint: https://x\n    directEndpointInsecure: true\n".to_owned(), None),
    ];
    for (extra, field) in cases {
        let parsed = kubegate_gateway::Config::parse(
            &format!("{base}{extra}"),
            std::path::Path::new("c.yaml"),
        );
        match field {
            None => assert!(parsed.is_ok(), "{extra}: {parsed:?}"),
            Some(field) => {
                let err = parsed.unwrap_err().to_string();
                assert!(err.contains(field), "{extra}: {err}");
            }
        }
    }
}

/// kube's request options on the management API's writes, as kube-apiserver's create and
/// delete handlers read them: `dryRun=All` checks everything and changes nothing (so
/// `kubectl create/delete --dry-run=server` is safe against the gateway), a value kube does not
/// know is its 422 naming the options kind, and `preconditions.uid` deletes only that object.
#[tokio::test(flavor = "multi_thread")]
async fn management_writes_honour_dry_run_and_preconditions() {
    require_kubectl();
    let env = Env::start().await;
    let client = env.client();
    let v1 = v1_url(&env);
    let keys = format!("{v1}/ownedaccesskeys");
    // A JSON POST as the scoped key's holder.
    let post = |url: String, body: &'static [u8]| {
        let client = &client;
        async move {
            client
                .post(&url, SCOPED_KEY, "application/json", body.to_vec())
                .await
        }
    };
    let names = || async {
        let list = client.get(&keys, SCOPED_KEY, &[]).await;
        assert_eq!(list.status, 200, "{}", list.body);
        let list: serde_json::Value = serde_json::from_str(&list.body).unwrap();
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["metadata"]["name"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let invalid = |kind: &str, errors: &[(&str, &str)]| {
        let text: Vec<String> = errors.iter().map(|(f, b)| format!("{f}: {b}")).collect();
        let message = match text.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        let causes: Vec<serde_json::Value> = errors
            .iter()
            .map(|(f, b)| serde_json::json!({"reason": "FieldValueNotSupported", "message": b, "field": f}))
            .collect();
        serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("{kind}.meta.k8s.io \"\" is invalid: {message}"),
            "reason": "Invalid",
            "details": {"group": "meta.k8s.io", "kind": kind, "causes": causes},
            "code": 422,
        })
    };
    let dry_some = r#"Unsupported value: []string{"Some"}: supported values: "All""#;
    let loose = r#"Unsupported value: "Loose": supported values: "", "Ignore", "Strict", "Warn""#;
    let creates = [
        ("?dryRun=All", 201, None),
        (
            "?dryRun=Some",
            422,
            Some(invalid("CreateOptions", &[("dryRun", dry_some)])),
        ),
        (
            "?dryRun=All&dryRun=Other",
            422,
            Some(invalid(
                "CreateOptions",
                &[(
                    "dryRun",
                    r#"Unsupported value: []string{"All", "Other"}: supported values: "All""#,
                )],
            )),
        ),
        (
            "?fieldValidation=Loose&dryRun=Some",
            422,
            Some(invalid(
                "CreateOptions",
                &[("dryRun", dry_some), ("fieldValidation", loose)],
            )),
        ),
    ];
    for (query, status, body) in creates {
        let reply = post(format!("{keys}{query}"), br#"{"metadata":{"name":"dry"}}"#).await;
        assert_eq!(reply.status, status, "{query}: {}", reply.body);
        let got: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        match body {
            Some(body) => assert_eq!(got, body, "{query}"),
            None => {
                assert_eq!(got["metadata"]["name"], "dry");
                assert!(got["spec"].get("key").is_none(), "no key was made: {got}");
            }
        }
    }
    assert!(!names().await.contains(&"dry".to_owned()), "nothing stored");
    // A dry-run token is checked through (minted, to measure it) and not handed out.
    let token = post(
        format!("{v1}/directclusterendpointtokens?dryRun=All"),
        br#"{"spec":{}}"#,
    )
    .await;
    assert_eq!(token.status, 201, "{}", token.body);
    let token: serde_json::Value = serde_json::from_str(&token.body).unwrap();
    assert!(token["status"].get("token").is_none(), "{token}");

    // Deletes, of a key made for them.
    let created = post(keys.clone(), br#"{"metadata":{"name":"doomed"}}"#).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let created: serde_json::Value = serde_json::from_str(&created.body).unwrap();
    let uid = created["metadata"]["uid"].as_str().unwrap().to_owned();
    // A dry run checks the name as the create would: taken is kube's 409.
    let again = post(
        format!("{keys}?dryRun=All"),
        br#"{"metadata":{"name":"doomed"}}"#,
    )
    .await;
    assert_eq!(again.status, 409, "{}", again.body);
    let delete = |query: &str, body: &str| {
        let req = http::Request::delete(format!("{keys}/doomed{query}"))
            .header("authorization", format!("Bearer {SCOPED_KEY}"))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_owned(),
            )))
            .unwrap();
        client.send(req)
    };
    let conflict = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("Operation cannot be fulfilled on ownedaccesskeys.management.loft.sh \"doomed\": Precondition failed: UID in precondition: not-it, UID in object meta: {uid}"),
        "reason": "Conflict",
        "details": {"name": "doomed", "group": "management.loft.sh", "kind": "ownedaccesskeys"},
        "code": 409,
    });
    let deletes = [
        ("?dryRun=All", "", 200, None),
        (
            "",
            r#"{"kind":"DeleteOptions","apiVersion":"v1","dryRun":["All"]}"#,
            200,
            None,
        ),
        (
            "",
            r#"{"dryRun":["Some"]}"#,
            422,
            Some(invalid("DeleteOptions", &[("dryRun", dry_some)])),
        ),
        (
            "",
            r#"{"preconditions":{"uid":"not-it"}}"#,
            409,
            Some(conflict),
        ),
    ];
    for (query, body, status, expected) in deletes {
        let reply = delete(query, body).await;
        assert_eq!(reply.status, status, "{query} {body}: {}", reply.body);
        if let Some(expected) = expected {
            let got: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
            assert_eq!(got, expected, "{query} {body}");
        }
        assert!(
            names().await.contains(&"doomed".to_owned()),
            "{query} {body}: still there"
        );
    }
    // kubectl's own server-side dry run sends its DeleteOptions in the body.
    let out = env
        .kubectl(
            SCOPED_KEY,
            MGMT,
            &["delete", "ownedaccesskeys", "doomed", "--dry-run=server"],
        )
        .await;
    let out = assert_ok(&out);
    assert!(out.contains("(server dry run)"), "{out}");
    assert!(names().await.contains(&"doomed".to_owned()));
    // The right UID deletes it.
    let reply = delete("", &format!(r#"{{"preconditions":{{"uid":"{uid}"}}}}"#)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(!names().await.contains(&"doomed".to_owned()));
}

/// Target names come from request paths before anyone is authenticated. Made-up ones share
/// the metrics label `unknown` instead of taking the slots `metricsMaxTargets` gives targets
/// by name: with two slots, three made-up clusters asked for without a credential, the real
/// cluster is still counted under its own name. The refusals are counted by kind.
#[tokio::test(flavor = "multi_thread")]
async fn made_up_targets_share_one_metrics_label() {
    let env = Env::start_with("metricsMaxTargets: 2\n").await;
    let client = env.client();
    for junk in ["junk1", "junk2", "junk3"] {
        let reply = client
            .get(
                &format!("{}/kubernetes/cluster/{junk}/api/v1/pods", env.url),
                "",
                &[],
            )
            .await;
        assert_eq!(reply.status, 401);
    }
    assert_ok(&env.kubectl(ADMIN_KEY, A, &["get", "pods"]).await);
    // A session login with a made-up token is refused too (after the cluster took its slot
    // in the metrics' targets).
    let login = client
        .post(
            &format!("{}/auth/login", env.url),
            "",
            "application/json",
            br#"{"token":"made-up"}"#.to_vec(),
        )
        .await;
    assert_eq!(login.status, 401, "{}", login.body);
    let metrics = client
        .get(&format!("{}/metrics", env.url), ADMIN_KEY, &[])
        .await;
    assert_eq!(metrics.status, 200);
    // Every refusal of an unauthenticated caller is counted, whether its log line was written.
    for counted in [
        r#"kubegate_refusals_total{kind="authentication"} 3"#,
        r#"kubegate_refusals_total{kind="login"} 1"#,
    ] {
        assert!(
            metrics.body.contains(counted),
            "{counted}\n{}",
            metrics.body
        );
    }
    assert!(
        metrics
            .body
            .contains(r#"kubegate_requests_total{target="cluster/a",verb="list",code="200"} 1"#),
        "{}",
        metrics.body
    );
    assert!(
        metrics
            .body
            .contains(r#"kubegate_requests_total{target="unknown",verb="list",code="401"} 3"#),
        "{}",
        metrics.body
    );
    assert!(!metrics.body.contains("junk"), "{}", metrics.body);
}

/// `POST selves` with `spec.accessKey` describes that key, as Loft's does for a CLI checking a
/// stored key; a key that does not work gets 401; the key never comes back in the answer.
#[tokio::test(flavor = "multi_thread")]
async fn selves_describes_the_key_it_is_given() {
    let env = Env::start().await;
    let client = env.client();
    let url = format!("{}/selves", v1_url(&env));
    let ask = |key: &str| {
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "management.loft.sh/v1",
            "kind": "Self",
            "spec": {"accessKey": key},
        }))
        .unwrap()
    };
    let described = client
        .post(&url, ADMIN_KEY, "application/json", ask(VIEWER_KEY))
        .await;
    assert_eq!(described.status, 201, "{}", described.body);
    let body: serde_json::Value = serde_json::from_str(&described.body).unwrap();
    assert_eq!(body["status"]["subject"], "viewer", "{body}");
    assert!(!described.body.contains(VIEWER_KEY), "{}", described.body);
    // Without one, the caller.
    let own = client
        .post(&url, ADMIN_KEY, "application/json", ask(""))
        .await;
    let body: serde_json::Value = serde_json::from_str(&own.body).unwrap();
    assert_eq!(body["status"]["subject"], "admin", "{body}");
    let refused = client
        .post(&url, ADMIN_KEY, "application/json", ask("kgak_made-up"))
        .await;
    assert_eq!(refused.status, 401, "{}", refused.body);
}

/// What the management API answers a method or verb its routes do not serve, as
/// kube-apiserver does: go-restful's 405 (the path is served under other methods) or 404 (no
/// route for the path), both with empty details, and `ListResource`'s answer to a watch of a
/// resource that cannot be watched.
#[tokio::test(flavor = "multi_thread")]
async fn unsupported_management_requests_get_kube_answers() {
    let env = Env::start().await;
    let client = env.client();
    let v1 = v1_url(&env);
    let generic = |code: u16, reason: &str, message: &str| {
        serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "details": {}, "code": code})
    };
    let not_allowed = generic(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
    );
    let no_route = generic(
        404,
        "NotFound",
        "the server could not find the requested resource",
    );
    let no_watch = serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "watch is not supported on resources of kind \"clusters.management.loft.sh\"",
        "reason": "MethodNotAllowed",
        "details": {"group": "management.loft.sh", "kind": "clusters"}, "code": 405});
    let cases = [
        ("DELETE", "/clusters/a", &not_allowed),
        ("DELETE", "/clusters", &not_allowed),
        ("GET", "/selves", &not_allowed),
        ("GET", "/selves/me", &no_route),
        ("GET", "/clusters?watch=true", &no_watch),
    ];
    for (method, path, expected) in cases {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("{v1}{path}"))
            .header("authorization", format!("Bearer {ADMIN_KEY}"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let reply = client.send(req).await;
        let got: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(
            (reply.status, &got),
            (expected["code"].as_u64().unwrap() as u16, expected),
            "{method} {path}"
        );
    }
}

/// The management API's lists honour `labelSelector` and `fieldSelector` as kube-apiserver's
/// registry does (the gateway's objects carry no labels), and answer a selector that does not
/// parse, or a field kube cannot select on, with a 400.
#[tokio::test(flavor = "multi_thread")]
async fn management_lists_honour_selectors() {
    require_kubectl();
    let env = Env::start().await;
    let client = env.client();
    let clusters = format!("{}/clusters", v1_url(&env));
    let cases: [(&str, u16, &[&str], &str); 6] = [
        ("", 200, &["a", "b"], ""),
        ("?labelSelector=team%3Da", 200, &[], ""),
        ("?labelSelector=%21team", 200, &["a", "b"], ""),
        ("?fieldSelector=metadata.name%21%3Da", 200, &["b"], ""),
        (
            "?fieldSelector=spec.owner%3Dx",
            400,
            &[],
            r#""spec.owner" is not a known field selector: only "metadata.name", "metadata.namespace""#,
        ),
        (
            "?labelSelector=a%3Db%20c",
            400,
            &[],
            "unable to parse requirement: ",
        ),
    ];
    for (query, status, names, message) in cases {
        let reply = client
            .get(&format!("{clusters}{query}"), ADMIN_KEY, &[])
            .await;
        assert_eq!(reply.status, status, "{query}: {}", reply.body);
        let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        if status == 200 {
            let got: Vec<&str> = body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap())
                .collect();
            assert_eq!(got, names, "{query}");
        } else {
            assert_eq!(body["reason"], "BadRequest", "{query}");
            assert!(
                body["message"].as_str().unwrap().starts_with(message),
                "{query}: {body}"
            );
        }
    }
    let out = env
        .kubectl(ADMIN_KEY, MGMT, &["get", "clusters", "-l", "team=a"])
        .await;
    assert!(out.status.success());
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("No resources found"), "{said}");
}

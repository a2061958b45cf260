//! JSON and YAML round trips of every wire type, written the way Loft's docs and CLIs write them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kubegate_api::*;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

/// Decode `text` as JSON, re-encode it, and check the re-encoding equals `expected` exactly
/// (as a JSON value) and decodes to the same typed value.
fn json_round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    text: &str,
    expected: &Value,
) -> T {
    let typed: T = serde_json::from_str(text).unwrap();
    let encoded = serde_json::to_value(&typed).unwrap();
    assert_eq!(&encoded, expected);
    let again: T = serde_json::from_value(encoded).unwrap();
    assert_eq!(again, typed);
    typed
}

fn yaml_round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    text: &str,
    expected: &Value,
) -> T {
    let typed: T = serde_saphyr::from_str(text).unwrap();
    assert_eq!(&serde_json::to_value(&typed).unwrap(), expected);
    let yaml = serde_saphyr::to_string(&typed).unwrap();
    let again: T = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(again, typed, "re-encoded YAML:\n{yaml}");
    typed
}

#[test]
fn seed_direct_cluster_endpoint_token_yaml() {
    let yaml = "apiVersion: management.loft.sh/v1\nkind: DirectClusterEndpointToken\nspec: {}\n";
    let token: DirectClusterEndpointToken = yaml_round_trip(
        yaml,
        &json!({"apiVersion":"management.loft.sh/v1","kind":"DirectClusterEndpointToken","metadata":{},"spec":{}}),
    );
    assert_eq!(token.spec, DirectClusterEndpointTokenSpec::default());
    assert!(token.status.is_none());
}

#[test]
fn seed_direct_cluster_endpoint_token_json_and_empty_body() {
    json_round_trip::<DirectClusterEndpointToken>(
        r#"{"apiVersion":"management.loft.sh/v1","kind":"DirectClusterEndpointToken","spec":{}}"#,
        &json!({"apiVersion":"management.loft.sh/v1","kind":"DirectClusterEndpointToken","metadata":{},"spec":{}}),
    );
    // loftctl POSTs a bare `{}`.
    let token: DirectClusterEndpointToken = serde_json::from_str("{}").unwrap();
    assert_eq!(token, DirectClusterEndpointToken::default());
}

#[test]
fn direct_cluster_endpoint_token_with_scope_and_status() {
    let text = r#"{"apiVersion":"management.loft.sh/v1","kind":"DirectClusterEndpointToken",
        "metadata":{"name":"t1","creationTimestamp":"2024-05-01T10:00:00Z"},
        "spec":{"ttl":1800,"scope":{"clusters":[{"cluster":"prod"}]}},
        "status":{"token":"eyJhbGciOiJSUzI1NiJ9.e30.sig"}}"#;
    let token: DirectClusterEndpointToken = json_round_trip(
        text,
        &json!({"apiVersion":"management.loft.sh/v1","kind":"DirectClusterEndpointToken",
            "metadata":{"name":"t1","creationTimestamp":"2024-05-01T10:00:00Z"},
            "spec":{"ttl":1800,"scope":{"clusters":[{"cluster":"prod"}]}},
            "status":{"token":"eyJhbGciOiJSUzI1NiJ9.e30.sig"}}),
    );
    let debug = format!("{token:?}");
    assert!(
        !debug.contains("eyJhbGci"),
        "token leaked in Debug: {debug}"
    );
}

#[test]
fn wrong_kind_or_api_version_is_an_error() {
    let err = serde_json::from_str::<DirectClusterEndpointToken>(
        r#"{"apiVersion":"management.loft.sh/v1","kind":"Cluster","spec":{}}"#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("expected kind"), "{err}");
    let err = serde_json::from_str::<AccessKey>(
        r#"{"apiVersion":"management.loft.sh/v1","kind":"AccessKey"}"#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("expected apiVersion"), "{err}");
}

#[test]
fn scope_every_field_json() {
    let text = r#"{
      "roles":[{"role":"vcluster","projects":["p1"],"virtualClusters":["v1"]},{"role":"loft-cli"},
               {"role":"agent"},{"role":"network-peer"},{"role":"workspace"},{"role":"runner"},
               {"role":"metrics-writer"},{"role":"metrics-reader"},{"role":"future-role"}],
      "projects":[{"project":"*"}],
      "spaces":[{"project":"p1","space":"s1"}],
      "virtualClusters":[{"project":"p1","virtualCluster":"*"}],
      "clusters":[{"cluster":"prod"}],
      "rules":[{"verbs":["get","list"],
                "resources":[{"group":"apps","resources":["deployments","*/scale"],"resourceNames":["web"]}],
                "namespaces":["default",""],
                "nonResourceURLs":["/healthz*"],
                "requestTargets":["Cluster","Management","VirtualCluster","ProjectSpace","ProjectVirtualCluster","Elsewhere"],
                "cluster":"prod",
                "virtualClusters":[{"name":"vc","namespace":"ns"}]}],
      "allowLoftCli":true,
      "someFutureField":{"x":1}
    }"#;
    let mut expected: Value = serde_json::from_str(text).unwrap();
    expected.as_object_mut().unwrap().remove("someFutureField");
    let scope: AccessKeyScope = json_round_trip(text, &expected);
    assert_eq!(scope.roles[0].role, AccessKeyScopeRoleName::VCluster);
    assert_eq!(scope.roles[1].role, AccessKeyScopeRoleName::LoftCli);
    assert_eq!(
        scope.roles[8].role,
        AccessKeyScopeRoleName::Unknown("future-role".into())
    );
    assert!(!scope.roles[8].role.is_known());
    assert_eq!(
        scope.rules[0].request_targets[5],
        RequestTarget::Unknown("Elsewhere".into())
    );
    assert_eq!(scope.rules[0].non_resource_urls, ["/healthz*"]);
    assert!(!scope.is_unrestricted());
}

#[test]
fn scope_yaml_as_loft_docs_write_it() {
    let yaml = "\
roles:
  - role: loft-cli
projects:
  - project: my-project
spaces:
  - project: my-project
    space: '*'
virtualClusters:
  - project: my-project
    virtualCluster: my-vcluster
clusters:
  - cluster: '*'
rules:
  - verbs: [get]
    resources:
      - group: ''
        resources: [pods, pods/log]
    namespaces: ['']
    requestTargets: [Cluster]
";
    let scope: AccessKeyScope = yaml_round_trip(
        yaml,
        &json!({"roles":[{"role":"loft-cli"}],"projects":[{"project":"my-project"}],
            "spaces":[{"project":"my-project","space":"*"}],
            "virtualClusters":[{"project":"my-project","virtualCluster":"my-vcluster"}],
            "clusters":[{"cluster":"*"}],
            "rules":[{"verbs":["get"],"resources":[{"resources":["pods","pods/log"]}],"namespaces":[""],"requestTargets":["Cluster"]}]}),
    );
    assert_eq!(scope.rules[0].namespaces, [""]);
}

#[test]
fn empty_and_null_scopes_are_unrestricted() {
    let scope: AccessKeyScope = json_round_trip("{}", &json!({}));
    assert!(scope.is_unrestricted());
    let scope: AccessKeyScope =
        serde_json::from_str(r#"{"roles":null,"projects":[],"allowLoftCli":false}"#).unwrap();
    assert!(scope.is_unrestricted());
}

#[test]
fn contains_role_matches_loft_helper() {
    let cli: AccessKeyScope = serde_json::from_str(r#"{"allowLoftCli":true}"#).unwrap();
    assert!(cli.contains_role(&AccessKeyScopeRoleName::LoftCli));
    assert!(!cli.contains_role(&AccessKeyScopeRoleName::NetworkPeer));
    for implied in ["vcluster", "agent", "runner", "network-peer"] {
        let scope: AccessKeyScope =
            serde_json::from_value(json!({"roles":[{"role":implied}]})).unwrap();
        assert!(
            scope.contains_role(&AccessKeyScopeRoleName::NetworkPeer),
            "{implied}"
        );
    }
    let ws: AccessKeyScope =
        serde_json::from_value(json!({"roles":[{"role":"workspace"}]})).unwrap();
    assert!(!ws.contains_role(&AccessKeyScopeRoleName::NetworkPeer));
}

#[test]
fn access_key_yaml_as_created_by_vcluster_platform_cli() {
    let yaml = "\
apiVersion: storage.loft.sh/v1
kind: AccessKey
metadata:
  name: my-key
  labels:
    loft.sh/user: admin
spec:
  displayName: ci
  description: key for CI
  user: admin
  groups: [ci]
  key: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
  ttl: 86400
  ttlAfterLastActivity: true
  type: User
  scope:
    roles:
      - role: vcluster
status:
  lastActivity: '2024-06-01T12:00:00Z'
";
    let key: AccessKey = yaml_round_trip(
        yaml,
        &json!({"apiVersion":"storage.loft.sh/v1","kind":"AccessKey",
            "metadata":{"name":"my-key","labels":{"loft.sh/user":"admin"}},
            "spec":{"displayName":"ci","description":"key for CI","user":"admin","groups":["ci"],
                "key":"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "ttl":86400,"ttlAfterLastActivity":true,"type":"User","scope":{"roles":[{"role":"vcluster"}]}},
            "status":{"lastActivity":"2024-06-01T12:00:00Z"}}),
    );
    assert_eq!(key.spec.r#type, AccessKeyType::User);
    let debug = format!("{key:?}");
    assert!(
        !debug.contains("0123456789abcdef"),
        "key leaked in Debug: {debug}"
    );
}

#[test]
fn access_key_all_spec_fields_json() {
    let value = json!({"apiVersion":"storage.loft.sh/v1","kind":"AccessKey","metadata":{"name":"k"},
        "spec":{"team":"devs","subject":"sub","disabled":true,"type":"OIDCRefreshToken",
            "identity":{"userId":"u1","username":"jane","preferredUsername":"Jane","email":"j@x.io",
                "emailVerified":true,"groups":["g"],"connector":"github","connectorData":"c2VjcmV0"},
            "identityRefresh":"2024-01-01T00:00:00Z",
            "oidcProvider":{"clientId":"c","nonce":"n","redirectUri":"https://x/cb","scopes":"openid"},
            "parent":"p",
            "oidcLogin":{"idToken":"aWQ=","accessToken":"YWNj","refreshToken":"cmVm","lastRefresh":"2024-01-01T00:00:00Z"}},
        "status":{}});
    let key: AccessKey = json_round_trip(&value.to_string(), &value);
    assert_eq!(key.spec.r#type, AccessKeyType::OidcRefreshToken);
    let debug = format!("{key:?}");
    for secret in ["c2VjcmV0", "secret", "YWNj", "cmVm"] {
        assert!(!debug.contains(secret), "{secret} leaked: {debug}");
    }
}

#[test]
fn access_key_type_keeps_unknown_values() {
    let spec: AccessKeySpec = serde_json::from_value(json!({"type":"Workspace"})).unwrap();
    assert_eq!(spec.r#type, AccessKeyType::Workspace);
    let spec: AccessKeySpec = serde_json::from_value(json!({"type":"Robot"})).unwrap();
    assert_eq!(
        serde_json::to_value(&spec).unwrap(),
        json!({"type":"Robot"})
    );
    let spec: AccessKeySpec = serde_json::from_value(json!({"type":""})).unwrap();
    assert_eq!(spec.r#type, AccessKeyType::None);
    assert_eq!(serde_json::to_value(&spec).unwrap(), json!({}));
}

#[test]
fn owned_access_key_inlines_storage_types() {
    let value = json!({"apiVersion":"management.loft.sh/v1","kind":"OwnedAccessKey","metadata":{"name":"k"},
        "spec":{"user":"admin","type":"User","ttl":60},"status":{"lastActivity":"2024-06-01T12:00:00Z"}});
    json_round_trip::<OwnedAccessKey>(&value.to_string(), &value);
}

#[test]
fn self_request_and_response() {
    let request =
        json!({"apiVersion":"management.loft.sh/v1","kind":"Self","metadata":{},"spec":{}});
    json_round_trip::<Self_>(&request.to_string(), &request);
    let response = json!({"apiVersion":"management.loft.sh/v1","kind":"Self","metadata":{"creationTimestamp":"2024-06-01T12:00:00Z"},
        "spec":{},
        "status":{"user":{"name":"admin","displayName":"Admin","username":"admin","email":"a@x.io","subject":"admin","icon":"i"},
            "team":{"name":"t","displayName":"T","username":"t","icon":"i"},
            "accessKey":"my-key","accessKeyScope":{"roles":[{"role":"loft-cli"}]},"accessKeyType":"User",
            "subject":"admin","uid":"1234","groups":["system:authenticated"],"instanceID":"abc",
            "loftHost":"loft.example.com","projectNamespacePrefix":"loft-p-"}});
    let s: Self_ = json_round_trip(&response.to_string(), &response);
    let status = s.status.unwrap();
    assert_eq!(status.instance_id, "abc");
    assert_eq!(status.access_key_type, AccessKeyType::User);
    let with_key: Self_ =
        serde_json::from_value(json!({"spec":{"accessKey":"supersecretkey"}})).unwrap();
    assert!(!format!("{with_key:?}").contains("supersecretkey"));
}

#[test]
fn cluster_project_and_instances_yaml() {
    let cluster: Cluster = yaml_round_trip(
        "\
apiVersion: management.loft.sh/v1
kind: Cluster
metadata:
  name: prod
  annotations:
    loft.sh/direct-cluster-endpoint: prod.agent.example.com
spec:
  displayName: Production
  owner: {user: admin}
  config: {secretName: prod-kubeconfig, secretNamespace: loft, key: config}
  networkPeer: true
  managementNamespace: loft
  access:
    - verbs: ['*']
      users: ['*']
status:
  phase: Initialized
",
        &json!({"apiVersion":"management.loft.sh/v1","kind":"Cluster",
            "metadata":{"name":"prod","annotations":{"loft.sh/direct-cluster-endpoint":"prod.agent.example.com"}},
            "spec":{"displayName":"Production","owner":{"user":"admin"},
                "config":{"secretName":"prod-kubeconfig","secretNamespace":"loft","key":"config"},
                "networkPeer":true,"managementNamespace":"loft","access":[{"verbs":["*"],"users":["*"]}]},
            "status":{"phase":"Initialized"}}),
    );
    assert!(cluster.spec.network_peer);

    yaml_round_trip::<Project>(
        "\
apiVersion: management.loft.sh/v1
kind: Project
metadata: {name: dev}
spec:
  displayName: Dev
  allowedClusters: [{name: '*'}]
  members:
    - kind: Team
      group: storage.loft.sh
      name: devs
      clusterRole: loft-management-project-user
",
        &json!({"apiVersion":"management.loft.sh/v1","kind":"Project","metadata":{"name":"dev"},
            "spec":{"displayName":"Dev","allowedClusters":[{"name":"*"}],
                "members":[{"kind":"Team","group":"storage.loft.sh","name":"devs","clusterRole":"loft-management-project-user"}]}}),
    );

    let vci: VirtualClusterInstance = yaml_round_trip(
        "\
apiVersion: management.loft.sh/v1
kind: VirtualClusterInstance
metadata: {name: my-vc, namespace: loft-p-dev}
spec:
  templateRef: {name: isolated, version: 1.0.0}
  clusterRef: {cluster: prod, namespace: loft-dev-v-my-vc, virtualCluster: my-vc}
  forwardTokenMode: TokenReview
status: {phase: Ready}
",
        &json!({"apiVersion":"management.loft.sh/v1","kind":"VirtualClusterInstance",
            "metadata":{"name":"my-vc","namespace":"loft-p-dev"},
            "spec":{"templateRef":{"name":"isolated","version":"1.0.0"},
                "clusterRef":{"cluster":"prod","namespace":"loft-dev-v-my-vc","virtualCluster":"my-vc"},
                "forwardTokenMode":"TokenReview"},
            "status":{"phase":"Ready"}}),
    );
    assert_eq!(vci.spec.cluster_ref.unwrap().cluster, "prod");

    yaml_round_trip::<SpaceInstance>(
        "\
apiVersion: management.loft.sh/v1
kind: SpaceInstance
metadata: {name: my-space, namespace: loft-p-dev}
spec:
  clusterRef: {cluster: prod, namespace: my-space}
  owner: {team: devs}
",
        &json!({"apiVersion":"management.loft.sh/v1","kind":"SpaceInstance",
            "metadata":{"name":"my-space","namespace":"loft-p-dev"},
            "spec":{"clusterRef":{"cluster":"prod","namespace":"my-space"},"owner":{"team":"devs"}}}),
    );
}

#[test]
fn kube_core_resource_paths() {
    use kube_core::Resource;
    assert_eq!(
        DirectClusterEndpointToken::url_path(&(), None),
        "/apis/management.loft.sh/v1/directclusterendpointtokens"
    );
    assert_eq!(
        VirtualClusterInstance::url_path(&(), Some("loft-p-dev")),
        "/apis/management.loft.sh/v1/namespaces/loft-p-dev/virtualclusterinstances"
    );
    assert_eq!(AccessKey::api_version(&()), "storage.loft.sh/v1");
    assert_eq!(Self_::kind(&()), "Self");
    assert_eq!(Self_::plural(&()), "selves");
    assert_eq!(
        <Project as k8s_openapi::ListableResource>::LIST_KIND,
        "ProjectList"
    );
    let c = Cluster::new("prod", ClusterSpec::default());
    assert_eq!(c.meta().name.as_deref(), Some("prod"));
}

#[test]
fn list_decodes_via_k8s_openapi_list() {
    let list: k8s_openapi::List<Cluster> = serde_json::from_value(json!({
        "apiVersion":"management.loft.sh/v1","kind":"ClusterList","metadata":{"resourceVersion":"7"},
        "items":[{"apiVersion":"management.loft.sh/v1","kind":"Cluster","metadata":{"name":"a"},"spec":{}},
                 {"metadata":{"name":"b"},"spec":{}}]})).unwrap();
    assert_eq!(list.items.len(), 2);
}

/// Go's field order: `kind` before `apiVersion`; inside a list, no `kind`/`apiVersion` at all.
#[test]
fn objects_and_list_items_are_written_in_go_order() {
    let mut cluster = Cluster::new(
        "c",
        ClusterSpec {
            display_name: "C".into(),
            ..Default::default()
        },
    );
    cluster.status = Some(PhaseStatus {
        phase: "Ready".into(),
        ..Default::default()
    });
    assert_eq!(
        serde_json::to_string(&cluster).unwrap(),
        r#"{"kind":"Cluster","apiVersion":"management.loft.sh/v1","metadata":{"name":"c"},"spec":{"displayName":"C"},"status":{"phase":"Ready"}}"#
    );
    assert_eq!(
        serde_json::to_string(&ListItems(&[cluster])).unwrap(),
        r#"[{"metadata":{"name":"c"},"spec":{"displayName":"C"},"status":{"phase":"Ready"}}]"#
    );
}

/// An instance's status: the stored phase inline with management v1's per-request
/// `canUse`/`canUpdate`/`online`, each left out when false, as Go's `omitempty` does; what
/// a platform sends (nulls, fields kubegate does not model) still decodes.
#[test]
fn instance_status_inlines_the_phase_beside_what_the_requester_may_do() {
    let sent = r#"{"phase":"Ready","reason":null,"canUse":true,"canUpdate":false,"online":true,"conditions":[]}"#;
    let status: InstanceStatus = serde_json::from_str(sent).unwrap();
    assert_eq!(status.phase.phase, "Ready");
    assert!(status.can_use && !status.can_update && status.online);
    assert_eq!(
        serde_json::to_string(&status).unwrap(),
        r#"{"phase":"Ready","canUse":true,"online":true}"#
    );
}

/// The platform's `/version` (Loft's `auth.Version`, spec/loft-api.md §3): every field, in
/// Go's order; an older platform's reply without the upgrade fields still decodes.
#[test]
fn platform_version() {
    let full = r#"{"version":"v4.3.0","major":"4","minor":"3","kubeVersion":"v1.31.2","newerVersion":"v4.4.0","shouldUpgrade":true}"#;
    let v: PlatformVersion = json_round_trip(
        full,
        &json!({"version": "v4.3.0", "major": "4", "minor": "3", "kubeVersion": "v1.31.2",
                "newerVersion": "v4.4.0", "shouldUpgrade": true}),
    );
    assert_eq!(serde_json::to_string(&v).unwrap(), full);
    let old: PlatformVersion = serde_json::from_str(
        r#"{"version":"v3.4.0","major":"3","minor":"4","kubeVersion":"v1.27.3"}"#,
    )
    .unwrap();
    assert_eq!((old.major.as_str(), old.should_upgrade), ("3", false));
}

//! Typed calls to the gateway's `management.loft.sh/v1` API. Errors are kube-client errors; a
//! refused request is `kube_client::Error::Api` with the gateway's Status.

use std::time::Duration;

use kube_client::Api;
use kube_client::api::{DeleteParams, ListParams, PostParams};
use kubegate_api::{
    AccessKeyScope, AccessKeySpec, Cluster, DirectClusterEndpointToken,
    DirectClusterEndpointTokenSpec, OwnedAccessKey, Project, Self_, SpaceInstance,
    VirtualClusterInstance,
};

/// The management API of one gateway, over a kube client whose base URL is
/// `/kubernetes/management`.
#[derive(Clone)]
pub struct Management {
    client: kube_client::Client,
}

impl std::fmt::Debug for Management {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Management").finish_non_exhaustive()
    }
}

/// What to put in a new access key.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AccessKeyRequest {
    /// Object name; when `None` the gateway picks one.
    pub name: Option<String>,
    /// Display name.
    pub display_name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Lifetime; `None` = no expiry (or the gateway's limit).
    pub ttl: Option<Duration>,
    /// Scope; `None` inherits the caller's.
    pub scope: Option<AccessKeyScope>,
}

impl Management {
    /// Wraps a kube client pointed at `/kubernetes/management`.
    pub fn new(client: kube_client::Client) -> Management {
        Management { client }
    }

    /// The underlying kube client (for `Api<T>` calls this type does not wrap).
    pub fn client(&self) -> &kube_client::Client {
        &self.client
    }

    /// `POST selves`: who the caller is, its groups and its credential's scope.
    pub async fn whoami(&self) -> Result<Self_, kube_client::Error> {
        let api: Api<Self_> = Api::all(self.client.clone());
        api.create(&PostParams::default(), &Self_::default()).await
    }

    /// Connected clusters the caller may see.
    pub async fn clusters(&self) -> Result<Vec<Cluster>, kube_client::Error> {
        let api: Api<Cluster> = Api::all(self.client.clone());
        Ok(api.list(&ListParams::default()).await?.items)
    }

    /// Projects the caller may see.
    pub async fn projects(&self) -> Result<Vec<Project>, kube_client::Error> {
        let api: Api<Project> = Api::all(self.client.clone());
        Ok(api.list(&ListParams::default()).await?.items)
    }

    /// Virtual cluster instances of every project the caller may see.
    pub async fn virtual_clusters(
        &self,
    ) -> Result<Vec<VirtualClusterInstance>, kube_client::Error> {
        let api: Api<VirtualClusterInstance> = Api::all(self.client.clone());
        Ok(api.list(&ListParams::default()).await?.items)
    }

    /// Space instances of every project the caller may see.
    pub async fn spaces(&self) -> Result<Vec<SpaceInstance>, kube_client::Error> {
        let api: Api<SpaceInstance> = Api::all(self.client.clone());
        Ok(api.list(&ListParams::default()).await?.items)
    }

    /// `POST directclusterendpointtokens`: a short-lived token for the caller, `ttl` (rounded
    /// up to whole seconds; `None` = the gateway's default) and `scope` (`None` inherits the
    /// caller's; a broader scope is refused with 403). The token is in `status.token`.
    pub async fn create_direct_cluster_endpoint_token(
        &self,
        ttl: Option<Duration>,
        scope: Option<AccessKeyScope>,
    ) -> Result<DirectClusterEndpointToken, kube_client::Error> {
        let api: Api<DirectClusterEndpointToken> = Api::all(self.client.clone());
        let object = DirectClusterEndpointToken {
            spec: DirectClusterEndpointTokenSpec {
                ttl: ttl.map_or(0, whole_seconds),
                scope,
            },
            ..Default::default()
        };
        api.create(&PostParams::default(), &object).await
    }

    /// `POST ownedaccesskeys`: a new access key of the caller. The secret is in `spec.key` of the
    /// answer and is never shown again.
    pub async fn create_access_key(
        &self,
        request: &AccessKeyRequest,
    ) -> Result<OwnedAccessKey, kube_client::Error> {
        let api: Api<OwnedAccessKey> = Api::all(self.client.clone());
        let mut object = OwnedAccessKey {
            spec: AccessKeySpec {
                display_name: request.display_name.clone().unwrap_or_default(),
                description: request.description.clone().unwrap_or_default(),
                ttl: request.ttl.map_or(0, whole_seconds),
                scope: request.scope.clone(),
                ..Default::default()
            },
            ..Default::default()
        };
        object.metadata.name = request.name.clone();
        api.create(&PostParams::default(), &object).await
    }

    /// The caller's access keys (never with their secrets).
    pub async fn access_keys(&self) -> Result<Vec<OwnedAccessKey>, kube_client::Error> {
        let api: Api<OwnedAccessKey> = Api::all(self.client.clone());
        Ok(api.list(&ListParams::default()).await?.items)
    }

    /// Deletes (revokes) one of the caller's access keys.
    pub async fn delete_access_key(&self, name: &str) -> Result<(), kube_client::Error> {
        let api: Api<OwnedAccessKey> = Api::all(self.client.clone());
        api.delete(name, &DeleteParams::default()).await?;
        Ok(())
    }
}

fn whole_seconds(ttl: Duration) -> i64 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i64::try_from(secs).unwrap_or(i64::MAX)
}

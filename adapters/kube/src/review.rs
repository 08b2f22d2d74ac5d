//! [`AccessReview`] over the API server: TokenReview (`authentication.k8s.io/v1`) and
//! SubjectAccessReview (`authorization.k8s.io/v1`), as a kubelet's webhook authenticator and
//! authorizer use them. A node identity may create both (the Node authorizer's node rules).

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};
use vk_domain::kubelet_auth::{NodeAccess, UserInfo};
use vk_ports::{AccessReview, ClusterError, Decision};

use super::cluster_error;

/// [`AccessReview`] with a kube client.
#[derive(Clone)]
pub struct KubeAccessReview {
    client: Client,
}

impl KubeAccessReview {
    /// Wraps `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl AccessReview for KubeAccessReview {
    async fn authenticate(&self, token: &str) -> Result<Option<UserInfo>, ClusterError> {
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let review = TokenReview {
            spec: TokenReviewSpec { token: token.to_owned(), audiences: None },
            ..TokenReview::default()
        };
        let out = api.create(&PostParams::default(), &review).await.map_err(cluster_error)?;
        let Some(status) = out.status else { return Ok(None) };
        if status.authenticated != Some(true) {
            return Ok(None);
        }
        let user = status.user.unwrap_or_default();
        Ok(Some(UserInfo {
            username: user.username.unwrap_or_default(),
            uid: user.uid.unwrap_or_default(),
            groups: user.groups.unwrap_or_default(),
            extra: user.extra.unwrap_or_default().into_iter().collect(),
        }))
    }

    async fn authorize(
        &self,
        user: &UserInfo,
        access: &NodeAccess,
    ) -> Result<Decision, ClusterError> {
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.username.clone()),
                uid: (!user.uid.is_empty()).then(|| user.uid.clone()),
                groups: Some(user.groups.clone()),
                extra: (!user.extra.is_empty()).then(|| user.extra.clone().into_iter().collect()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(access.verb.to_owned()),
                    resource: Some("nodes".into()),
                    version: Some("v1".into()),
                    name: Some(access.node.clone()),
                    subresource: Some(access.subresource.to_owned()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let out = api.create(&PostParams::default(), &review).await.map_err(cluster_error)?;
        let status = out.status.unwrap_or_default();
        Ok(Decision { allowed: status.allowed, reason: status.reason.unwrap_or_default() })
    }
}

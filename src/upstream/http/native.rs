//! A native Responses upstream's stored responses: the URL of one, and the GET or DELETE that reaches it.

use ::http::{Method, Uri};
use bytes::Bytes;

use super::HttpUpstream;
use crate::upstream::{StoredResponseCall, TraceHeaders, UpstreamError, UpstreamResponse};

impl HttpUpstream {
    /// `GET`/`DELETE …/responses/{id}` or `GET …/responses/{id}/input_items?…`. The id is
    /// added as one escaped path segment and the client's query after the configured one,
    /// so neither can change which host or path is reached.
    pub(super) async fn stored(
        &self,
        call: StoredResponseCall,
    ) -> Result<UpstreamResponse, UpstreamError> {
        if !self.native || !matches!(call.method, Method::GET | Method::DELETE) {
            return Err(UpstreamError::Config(
                self.name.clone(),
                "does not serve the Responses API".into(),
            ));
        }
        let mut url = self.responses_url.clone();
        let broken =
            || UpstreamError::Config(self.name.clone(), "base_url cannot take a path".into());
        {
            let mut path = url.path_segments_mut().map_err(|()| broken())?;
            path.push(&call.id);
            if call.input_items {
                path.push("input_items");
            }
        }
        if !call.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&call.query);
        }
        let uri = Uri::try_from(url.as_str()).map_err(|_| broken())?;
        let response = self
            .call(
                call.method,
                &uri,
                Bytes::new(),
                &call.client_headers,
                &TraceHeaders::default(),
            )
            .await?;
        Ok(self.streaming(response))
    }
}

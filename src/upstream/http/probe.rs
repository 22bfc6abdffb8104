//! An HTTP upstream's health probe: `GET {base_url}/{probe_path}` with its own auth,
//! within `models_timeout_secs`; any answer but 429 or 5xx says it is back.

use ::http::{HeaderMap, Method};
use bytes::Bytes;

use super::HttpUpstream;
use crate::upstream::{TraceHeaders, UpstreamError};

impl HttpUpstream {
    pub(super) async fn probe_once(&self) -> Result<(), UpstreamError> {
        let no_client_headers = HeaderMap::new();
        let no_trace = TraceHeaders::default();
        let asked = self.call(
            Method::GET,
            &self.probe_uri,
            Bytes::new(),
            &no_client_headers,
            &no_trace,
        );
        let response = tokio::time::timeout(self.models_timeout, asked)
            .await
            .map_err(|_| UpstreamError::Timeout(self.name.clone()))??;
        let status = response.status();
        if status.is_server_error() || status == ::http::StatusCode::TOO_MANY_REQUESTS {
            return Err(UpstreamError::Broken(
                self.name.clone(),
                format!("the probe was answered {status}"),
            ));
        }
        Ok(())
    }
}

//! An HTTP upstream's own model list: `GET {base}/models` with the upstream's auth, parsed,
//! cached for a minute and served stale when the upstream fails; and one model by id,
//! `GET {base}/models/{id}`, for an id the list lacks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ::http::{HeaderMap, Method, StatusCode, Uri};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::{HttpUpstream, BODY_FAILED};
use crate::upstream::{ModelObject, TraceHeaders, UpstreamError};

/// How long a fetched `/models` list is reused.
const MODEL_LIST_TTL: Duration = Duration::from_secs(60);
/// The largest `/models` answer read.
const MAX_MODEL_LIST: usize = 4 * 1024 * 1024;

/// The last good list and when it was fetched.
pub(super) type Cached = (Instant, Arc<Vec<ModelObject>>);

impl HttpUpstream {
    /// The cached list while fresh; otherwise a new fetch within `models_timeout_secs`,
    /// falling back to the last good list (a failure never replaces it).
    pub(super) async fn cached_models(&self) -> Result<Arc<Vec<ModelObject>>, UpstreamError> {
        let cached = self.model_cache.lock().ok().and_then(|c| c.clone());
        if let Some((at, models)) = &cached {
            if at.elapsed() < MODEL_LIST_TTL {
                return Ok(models.clone());
            }
        }
        let fetched = tokio::time::timeout(self.models_timeout, self.fetch_models())
            .await
            .unwrap_or_else(|_| Err(UpstreamError::Timeout(self.name.clone())));
        match (fetched, cached) {
            (Ok(models), _) => {
                let models = Arc::new(models);
                if let Ok(mut cache) = self.model_cache.lock() {
                    *cache = Some((Instant::now(), models.clone()));
                }
                Ok(models)
            }
            (Err(err), Some((_, stale))) => {
                tracing::warn!(upstream = %self.name, error = %err, "model list failed; serving the last good one");
                Ok(stale)
            }
            (Err(err), None) => Err(err),
        }
    }

    /// `GET /models`, parsed: objects with a string `id`, everything else they carry kept.
    /// OpenAI and Anthropic both answer `{"data":[{"id":…},…]}`; the request carries the
    /// upstream's own auth and static headers (`x-api-key` and `anthropic-version` for
    /// `api = "anthropic"`), never a client's.
    async fn fetch_models(&self) -> Result<Vec<ModelObject>, UpstreamError> {
        #[derive(serde::Deserialize)]
        struct List {
            data: Vec<ModelObject>,
        }
        let response = self
            .call(
                Method::GET,
                &self.models_uri,
                Bytes::new(),
                &HeaderMap::new(),
                &TraceHeaders::default(),
            )
            .await?;
        if !response.status().is_success() {
            return Err(UpstreamError::Broken(
                self.name.clone(),
                format!("model list answered {}", response.status()),
            ));
        }
        let body = Limited::new(response.into_body(), MAX_MODEL_LIST)
            .collect()
            .await
            .map_err(|e| match e.is::<LengthLimitError>() {
                true => UpstreamError::Broken(self.name.clone(), "model list too large".into()),
                false => self.classify(&*e, BODY_FAILED),
            })?
            .to_bytes();
        let list: List = serde_json::from_slice(&body)
            .map_err(|_| UpstreamError::Broken(self.name.clone(), BODY_FAILED.into()))?;
        Ok(list
            .data
            .into_iter()
            .filter(|m| m.get("id").is_some_and(serde_json::Value::is_string))
            .collect())
    }

    /// [`Self::fetch_model`] within `models_timeout_secs`.
    pub(super) async fn model_by_id(&self, id: &str) -> Result<Option<ModelObject>, UpstreamError> {
        tokio::time::timeout(self.models_timeout, self.fetch_model(id))
            .await
            .unwrap_or_else(|_| Err(UpstreamError::Timeout(self.name.clone())))
    }

    /// `GET {base}/models/{id}`: the model object, `None` when the upstream answers that it
    /// has no such model (404), or cannot be asked for one model (405, 501). The id goes
    /// in as escaped path segments (its `/` kept, as in `meta-llama/Llama-3.1-8B`); an id
    /// with empty, `.` or `..` segments is not asked for.
    async fn fetch_model(&self, id: &str) -> Result<Option<ModelObject>, UpstreamError> {
        let parts: Vec<&str> = id.split('/').collect();
        if parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
        {
            return Ok(None);
        }
        let mut url = self.model_url.clone();
        let broken =
            || UpstreamError::Config(self.name.clone(), "base_url cannot take a path".into());
        url.path_segments_mut()
            .map_err(|()| broken())?
            .extend(parts);
        let uri = Uri::try_from(url.as_str()).map_err(|_| broken())?;
        let response = self
            .call(
                Method::GET,
                &uri,
                Bytes::new(),
                &HeaderMap::new(),
                &TraceHeaders::default(),
            )
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND
            | StatusCode::METHOD_NOT_ALLOWED
            | StatusCode::NOT_IMPLEMENTED => return Ok(None),
            status if !status.is_success() => {
                return Err(UpstreamError::Broken(
                    self.name.clone(),
                    format!("model lookup answered {status}"),
                ))
            }
            _ => {}
        }
        let body = Limited::new(response.into_body(), MAX_MODEL_LIST)
            .collect()
            .await
            .map_err(|e| match e.is::<LengthLimitError>() {
                true => UpstreamError::Broken(self.name.clone(), "model too large".into()),
                false => self.classify(&*e, BODY_FAILED),
            })?
            .to_bytes();
        let model: ModelObject = serde_json::from_slice(&body)
            .map_err(|_| UpstreamError::Broken(self.name.clone(), BODY_FAILED.into()))?;
        // Only an object for this very id counts (not, say, a catch-all answer).
        Ok(model
            .get("id")
            .and_then(serde_json::Value::as_str)
            .is_some_and(|found| found == id)
            .then_some(model))
    }
}

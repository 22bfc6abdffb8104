//! The model catalog behind `/v1/models` and `/v1/models/{id}`: configured names and
//! aliases, plus the live lists of pattern upstreams, asked concurrently.

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::future::join_all;
use serde_json::Value;

use super::registry::{Entry, Registry};
use super::{ModelObject, UpstreamError};

/// No model could be named: every pattern upstream failed and nothing is configured.
#[derive(Debug, thiserror::Error)]
#[error("no upstream answered its model list")]
pub struct CatalogError;

type Listing = Option<Result<Arc<Vec<ModelObject>>, UpstreamError>>;

impl Registry {
    /// Every model, deduplicated in config order: per upstream, its configured names
    /// and aliases, then what it lists (filtered by its patterns). Failed upstreams are
    /// logged and skipped; when they leave nothing at all, that is an error, not `[]`.
    pub async fn list_models(&self) -> Result<Vec<Value>, CatalogError> {
        let table = self.table();
        let listings = self.listings(table.entries.iter().collect()).await;
        let mut seen = HashSet::new();
        let mut models = Vec::new();
        let mut failed = false;
        for (entry, listing) in table.entries.iter().zip(listings) {
            let listed = match listing {
                Some(Ok(listed)) => Some(listed),
                Some(Err(err)) => {
                    tracing::warn!(upstream = entry.upstream.name(), error = %err, "could not list upstream models; serving the rest");
                    failed = true;
                    None
                }
                None => None,
            };
            let listed = listed.as_deref().map(Vec::as_slice).unwrap_or_default();
            for name in &entry.exact {
                if seen.insert(name.clone()) {
                    models.push(self.configured(entry, name, listed));
                }
            }
            for (alias, _) in &entry.aliases {
                if seen.insert(alias.clone()) {
                    models.push(self.configured(entry, alias, &[]));
                }
            }
            for model in listed.iter().filter(|m| entry.lists(id_of(m))) {
                if seen.insert(id_of(model).to_string()) {
                    models.push(with_defaults(model.clone(), entry));
                }
            }
        }
        if models.is_empty() && failed {
            return Err(CatalogError);
        }
        Ok(models)
    }

    /// The model object for `id`, if this gateway serves it: a configured name or alias,
    /// a name a pattern upstream lists, or one such an upstream knows when asked by id.
    /// `Err` when an upstream that could serve it failed to answer, so "not found" would
    /// be a guess.
    pub async fn find_model(&self, id: &str) -> Result<Option<Value>, CatalogError> {
        let table = self.table();
        for entry in &table.entries {
            if entry.exact.iter().any(|m| m == id) || entry.aliases.iter().any(|(a, _)| a == id) {
                let listed = match self.listings(vec![entry]).await.pop().flatten() {
                    Some(Ok(listed)) => listed,
                    _ => Arc::new(Vec::new()),
                };
                return Ok(Some(self.configured(entry, id, &listed)));
            }
        }
        let serving: Vec<&Entry> = table.entries.iter().filter(|e| e.lists(id)).collect();
        let listings = self.listings(serving.clone()).await;
        for (entry, listing) in serving.iter().zip(&listings) {
            if let Some(Ok(listed)) = listing {
                if let Some(model) = listed.iter().find(|m| id_of(m) == id) {
                    return Ok(Some(with_defaults(model.clone(), entry)));
                }
            }
        }
        for (entry, listing) in serving.iter().zip(&listings) {
            if let Some(Err(err)) = listing {
                tracing::warn!(upstream = entry.upstream.name(), error = %err, "could not list upstream models");
            }
        }
        // Not in any list: the upstreams whose patterns cover the id may still serve it
        // (a list can be partial), so each is asked for it by id.
        let asked = join_all(serving.iter().map(|e| e.upstream.retrieve_model(id))).await;
        let mut failed = false;
        for (entry, answer) in serving.into_iter().zip(asked) {
            match answer {
                Ok(Some(model)) => return Ok(Some(with_defaults(model, entry))),
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(upstream = entry.upstream.name(), error = %err, "could not ask upstream for the model");
                    failed = true;
                }
            }
        }
        if failed {
            return Err(CatalogError);
        }
        Ok(None)
    }

    /// The live lists of the pattern upstreams among `entries`, all asked at once.
    async fn listings(&self, entries: Vec<&Entry>) -> Vec<Listing> {
        join_all(entries.into_iter().map(|entry| async move {
            match entry.serves_any_listed {
                true => Some(entry.upstream.list_models().await),
                false => None,
            }
        }))
        .await
    }

    /// A configured name: the upstream's own object when it lists the name, otherwise
    /// one made here (`created` is when this gateway started serving it).
    fn configured(&self, entry: &Entry, name: &str, listed: &[ModelObject]) -> Value {
        if let Some(model) = listed.iter().find(|m| id_of(m) == name) {
            return with_defaults(model.clone(), entry);
        }
        serde_json::json!({
            "id": name,
            "object": "model",
            "created": self.created,
            "owned_by": entry.upstream.name(),
        })
    }
}

impl Entry {
    /// Does a pattern of this upstream cover `model`?
    fn lists(&self, model: &str) -> bool {
        self.prefixes.iter().any(|p| model.starts_with(p.as_str()))
    }
}

fn id_of(model: &ModelObject) -> &str {
    model.get("id").and_then(Value::as_str).unwrap_or_default()
}

/// The upstream's object with the OpenAI fields it left out filled in.
fn with_defaults(mut model: ModelObject, entry: &Entry) -> Value {
    model
        .entry("object")
        .or_insert_with(|| Value::from("model"));
    model.entry("created").or_insert_with(|| Value::from(0));
    model
        .entry("owned_by")
        .or_insert_with(|| Value::from(entry.upstream.name()));
    Value::Object(model)
}

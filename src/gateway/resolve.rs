//! Step 1 of a turn: the stored state it names, read under its lease; and step 2, the limits.

use std::sync::{Arc, LazyLock};

use super::turn::Stored;
use crate::store::{
    parse_session_id, session_id_of_conversation, History, SessionError, SessionLease, SessionStore,
};
use crate::wire::error::ApiError;

/// What a turn continues.
pub struct Resolved {
    /// The messages it continues (the system prompt apart), empty for a new turn; shared
    /// with the history cache, not copied.
    pub context: Arc<History>,
    /// The session's lease, held until the turn is settled or abandoned.
    pub lease: Option<SessionLease>,
    /// The native upstream that holds the response this turn continues.
    pub pinned: Option<String>,
}

impl Resolved {
    fn fresh() -> Self {
        static NOTHING: LazyLock<Arc<History>> = LazyLock::new(|| {
            Arc::new(History {
                system: None,
                messages: Vec::new(),
                bytes: 0,
            })
        });
        Resolved {
            context: NOTHING.clone(),
            lease: None,
            pinned: None,
        }
    }
}

/// Reads the state `stored` names for `owner`. Another key's state is never found.
pub async fn resolve(
    store: Option<&Arc<SessionStore>>,
    owner: &str,
    stored: &Stored,
) -> Result<Resolved, ApiError> {
    let Some(store) = store else {
        return Ok(Resolved::fresh());
    };
    match stored {
        Stored::Nothing => Ok(Resolved::fresh()),
        Stored::Session(id) => {
            let id = parse_session_id(id)?;
            leased(store, owner, id).await.map_err(ApiError::from)
        }
        Stored::Conversation(id) => {
            let id = session_id_of_conversation(id).map_err(|_| conversation_not_found())?;
            leased(store, owner, &id).await.map_err(conversation_error)
        }
        Stored::Response(id) => {
            let found = match is_response_id(id) {
                true => store.response_context(owner, id).await,
                false => Err(SessionError::NotFound),
            };
            let context = found.map_err(|err| match err {
                SessionError::NotFound => previous_response_not_found(),
                other => ApiError::from(other),
            })?;
            let mut resolved = Resolved::fresh();
            resolved.context = context;
            Ok(resolved)
        }
        Stored::NativeResponse(id) => {
            let holder = native_holder(store, owner, id).await?;
            let mut resolved = Resolved::fresh();
            resolved.pinned = Some(holder.ok_or_else(previous_response_not_found)?);
            Ok(resolved)
        }
    }
}

/// The session's lease, then its history under it.
async fn leased(
    store: &Arc<SessionStore>,
    owner: &str,
    id: &str,
) -> Result<Resolved, SessionError> {
    let lease = store.lease(owner, id).await?;
    let context = store.history(&lease).await?;
    Ok(Resolved {
        context,
        lease: Some(lease),
        pinned: None,
    })
}

/// The upstream holding `owner`'s native response `id`, if there is one.
pub async fn native_holder(
    store: &SessionStore,
    owner: &str,
    id: &str,
) -> Result<Option<String>, ApiError> {
    if !is_native_id(id) {
        return Ok(None);
    }
    match store.native_upstream(owner, id).await {
        Ok(upstream) => Ok(Some(upstream)),
        Err(SessionError::NotFound) => Ok(None),
        Err(other) => Err(ApiError::from(other)),
    }
}

/// `resp_` + 32 lowercase hex: anything else is never looked up.
pub fn is_response_id(id: &str) -> bool {
    id.strip_prefix("resp_")
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Longest response id accepted from a native upstream or a client.
const MAX_NATIVE_ID: usize = 200;

/// An id safe to record and to put in an upstream path: 1–200 ASCII letters, digits,
/// `_` and `-`. Anything else is never recorded or looked up.
pub fn is_native_id(id: &str) -> bool {
    (1..=MAX_NATIVE_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub fn previous_response_not_found() -> ApiError {
    ApiError::NotFound {
        message: "No stored response with that previous_response_id. Responses created with store: false cannot be continued.".into(),
        code: Some("previous_response_not_found"),
    }
}

pub fn conversation_not_found() -> ApiError {
    ApiError::NotFound {
        message: "No conversation found with that id.".into(),
        code: Some("conversation_not_found"),
    }
}

/// A session error as the Conversations API words it.
pub fn conversation_error(err: SessionError) -> ApiError {
    match err {
        SessionError::NotFound | SessionError::InvalidId => conversation_not_found(),
        other => ApiError::from(other),
    }
}

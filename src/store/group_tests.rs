//! Group commit: refusals fail alone, storage failures fail the batch, one session's turns never share a batch.

use super::*;
use crate::store::SessionStore;

async fn store(limits: SessionLimits) -> Arc<SessionStore> {
    let dir = std::env::temp_dir().join(format!(
        "gatewayd-group-{}",
        super::super::random_hex().unwrap()
    ));
    Arc::new(SessionStore::open_sqlite(&dir, limits).await.unwrap())
}

/// A batch of one turn per new session, each saying `texts[i]`; the answers.
async fn run_batch(
    store: &Arc<SessionStore>,
    texts: &[&str],
) -> (Vec<String>, Vec<Result<Version, SessionError>>) {
    run_batch_with(store, Dialect::Sqlite, texts, None).await
}

/// [`run_batch`] written in `dialect`, turn `stale` (if any) presenting a lease token
/// that is not its session's.
async fn run_batch_with(
    store: &Arc<SessionStore>,
    dialect: Dialect,
    texts: &[&str],
    stale: Option<usize>,
) -> (Vec<String>, Vec<Result<Version, SessionError>>) {
    let (mut ids, mut jobs, mut answers, mut leases) = (vec![], vec![], vec![], vec![]);
    for (i, text) in texts.iter().enumerate() {
        let id = store
            .create("k", Default::default(), None)
            .await
            .unwrap()
            .id;
        let lease = store.lease("k", &id).await.unwrap();
        let (done, answer) = oneshot::channel();
        jobs.push(Job {
            owner: "k".into(),
            session: Some((
                id.clone(),
                match stale == Some(i) {
                    true => "not-this-lease".into(),
                    false => lease.token.clone(),
                },
            )),
            messages: vec![format!("{{\"content\":\"{text}\"}}"), "{}".into()],
            response: None,
            done,
        });
        ids.push(id);
        answers.push(answer);
        leases.push(lease);
    }
    commit_batch(&store.writer, store.limits(), dialect, jobs).await;
    let mut outcomes = Vec::new();
    for answer in answers {
        outcomes.push(answer.await.unwrap());
    }
    (ids, outcomes)
}

async fn stored(store: &SessionStore, id: &str) -> usize {
    store.get("k", id).await.unwrap().2.len()
}

#[tokio::test]
async fn a_turn_over_its_limit_fails_alone() {
    let limits = SessionLimits {
        max_bytes: 64,
        ..SessionLimits::default()
    };
    let store = store(limits).await;
    let long = "x".repeat(80);
    let (ids, outcomes) = run_batch(&store, &["a", &long, "c"]).await;
    assert!(outcomes[0].is_ok() && outcomes[2].is_ok());
    assert!(matches!(outcomes[1], Err(SessionError::LimitExceeded(_))));
    assert_eq!(stored(&store, &ids[0]).await, 2);
    assert_eq!(stored(&store, &ids[1]).await, 0);
    assert_eq!(stored(&store, &ids[2]).await, 2);
}

#[tokio::test]
async fn a_storage_failure_fails_every_turn_of_its_batch() {
    let store = store(SessionLimits::default()).await;
    // A fault that hits one INSERT of the batch: the whole transaction rolls back.
    let trigger = sqlx::query(
        "CREATE TRIGGER poison BEFORE INSERT ON messages WHEN NEW.message LIKE '%POISON%' \
         BEGIN SELECT RAISE(ABORT, 'injected fault'); END",
    );
    store.writer.execute("test", trigger).await.unwrap();
    let (ids, outcomes) = run_batch(&store, &["a", "POISON", "c"]).await;
    for outcome in &outcomes {
        assert!(
            matches!(outcome, Err(e) if e.is_storage_failure()),
            "{outcome:?}"
        );
    }
    for id in &ids {
        assert_eq!(stored(&store, id).await, 0);
    }
    // The next batch, without the poisoned turn, commits.
    let (ids, outcomes) = run_batch(&store, &["d", "e"]).await;
    assert!(outcomes.iter().all(Result::is_ok));
    assert_eq!(stored(&store, &ids[1]).await, 2);
}

/// Two turns of one session queued together: they go to separate batches, and neither
/// makes the other's batch fail. On PostgreSQL the second can only be a stale one, after
/// a lost lease, and is refused; SQLite's leases live in memory (the row's token stays
/// NULL, presented as `''`), so here both commit, one batch after the other — in one
/// batch both would match one row and the batch would fail.
#[tokio::test]
async fn two_turns_of_one_session_never_share_a_batch() {
    let store = store(SessionLimits::default()).await;
    let id = store
        .create("k", Default::default(), None)
        .await
        .unwrap()
        .id;
    let other = store
        .create("k", Default::default(), None)
        .await
        .unwrap()
        .id;
    let lease = store.lease("k", &id).await.unwrap();
    let other_lease = store.lease("k", &other).await.unwrap();
    let committer = Committer::spawn(
        store.writer.clone(),
        Arc::new(arc_swap::ArcSwap::from_pointee(store.limits())),
        Dialect::Sqlite,
    );
    let turn = |id: &str, token: &str, text: &str| {
        committer.commit(
            "k",
            Some((id.to_string(), token.to_string())),
            vec![format!("{{\"content\":\"{text}\"}}")],
            None,
        )
    };
    // Polled together before the committer runs (current-thread runtime): one queue.
    let (first, second, third) = tokio::join!(
        turn(&id, &lease.token, "first"),
        turn(&id, &lease.token, "again"),
        turn(&other, &other_lease.token, "other"),
    );
    assert_eq!(first.unwrap(), (1, 1));
    assert_eq!(second.unwrap(), (2, 2));
    assert_eq!(third.unwrap(), (1, 1));
    assert_eq!(stored(&store, &id).await, 2);
    assert_eq!(stored(&store, &other).await, 1);
}

/// A commit that presents another token than the row holds is a lost lease, whatever the
/// backend: an in-memory lease presents `''` only while the row's token is NULL.
#[tokio::test]
async fn a_commit_with_a_foreign_token_is_a_lost_lease() {
    let store = store(SessionLimits::default()).await;
    let id = store
        .create("k", Default::default(), None)
        .await
        .unwrap()
        .id;
    let committer = Committer::spawn(
        store.writer.clone(),
        Arc::new(arc_swap::ArcSwap::from_pointee(store.limits())),
        Dialect::Sqlite,
    );
    let stale = committer
        .commit(
            "k",
            Some((id.clone(), "stale".into())),
            vec!["{}".into()],
            None,
        )
        .await;
    assert!(matches!(stale, Err(SessionError::LeaseLost)), "{stale:?}");
    assert_eq!(stored(&store, &id).await, 0);
}

/// A conversation turn whose response passes its owner's quota changes nothing: no
/// message appended, no bytes counted; the turn next to it in the batch commits; and a
/// turn its session refuses gives its claimed bytes back.
#[tokio::test]
async fn a_response_over_its_quota_fails_alone_and_stores_nothing() {
    let limits = SessionLimits {
        max_bytes: 64,
        ..SessionLimits::default()
    };
    let store = store(limits).await;
    let record = |id: &str, size: usize| ResponseRecord {
        id: id.into(),
        context: format!("[\"{}\"]", "x".repeat(size)),
        max_owner_bytes: 100,
        ..Default::default()
    };
    let (mut jobs, mut answers, mut leases, mut ids) = (vec![], vec![], vec![], vec![]);
    // Over the quota; within it; within it, but over its session's byte limit.
    for (text, response) in [
        ("a", record("r1", 200)),
        ("b", record("r2", 10)),
        (&*"y".repeat(80), record("r3", 10)),
    ] {
        let id = store
            .create("k", Default::default(), None)
            .await
            .unwrap()
            .id;
        let lease = store.lease("k", &id).await.unwrap();
        let (done, answer) = oneshot::channel();
        jobs.push(Job {
            owner: "k".into(),
            session: Some((id.clone(), lease.token.clone())),
            messages: vec![format!("{{\"content\":\"{text}\"}}")],
            response: Some(response),
            done,
        });
        ids.push(id);
        answers.push(answer);
        leases.push(lease);
    }
    commit_batch(&store.writer, store.limits(), Dialect::Sqlite, jobs).await;
    let mut outcomes = Vec::new();
    for answer in answers {
        outcomes.push(answer.await.unwrap());
    }
    assert!(
        matches!(outcomes[0], Err(SessionError::ResponseQuota(100))),
        "{outcomes:?}"
    );
    assert!(outcomes[1].is_ok(), "{outcomes:?}");
    assert!(
        matches!(outcomes[2], Err(SessionError::LimitExceeded(_))),
        "{outcomes:?}"
    );
    assert_eq!(stored(&store, &ids[0]).await, 0);
    assert_eq!(stored(&store, &ids[1]).await, 1);
    assert_eq!(
        store.response_bytes("k").await.unwrap(),
        record("r2", 10).bytes()
    );
    assert!(store.response("k", "r1").await.is_err());
    assert!(store.response("k", "r3").await.is_err());
}

/// PostgreSQL writes a batch of chat turns in one statement: a turn over its limit and
/// one whose lease was lost are refused alone, the others are stored in order, and a
/// session's next turn continues its numbering.
#[tokio::test]
async fn postgres_commits_a_batch_in_one_statement_and_refuses_turns_alone() {
    let Ok(url) = std::env::var("GATEWAYD_TEST_POSTGRES_URL") else {
        eprintln!("GATEWAYD_TEST_POSTGRES_URL not set: PostgreSQL variant not run");
        return;
    };
    let limits = SessionLimits {
        max_bytes: 64,
        ..SessionLimits::default()
    };
    let store = Arc::new(SessionStore::open_postgres(&url, limits).await.unwrap());
    let long = "x".repeat(80);
    let texts = ["a", long.as_str(), "c", "d"];
    let (ids, outcomes) = run_batch_with(&store, Dialect::Postgres, &texts, Some(3)).await;
    assert!(matches!(outcomes[1], Err(SessionError::LimitExceeded(_))));
    assert!(
        matches!(outcomes[3], Err(SessionError::LeaseLost)),
        "{:?}",
        outcomes[3]
    );
    let (first, third) = (outcomes[0].as_ref().unwrap(), outcomes[2].as_ref().unwrap());
    assert_eq!(
        first, third,
        "two fresh sessions, one turn of two messages each"
    );
    assert_eq!(first.1, 2);
    for (i, expected) in [(0, 2), (1, 0), (2, 2), (3, 0)] {
        assert_eq!(stored(&store, &ids[i]).await, expected, "session {i}");
    }
    let (_, _, messages) = store.get("k", &ids[2]).await.unwrap();
    assert_eq!(messages[0].json, r#"{"content":"c"}"#);
    // The same session again, in a batch of its own: numbered after its first turn.
    let lease = store.lease("k", &ids[0]).await.unwrap();
    let (done, answer) = oneshot::channel();
    let job = Job {
        owner: "k".into(),
        session: Some((ids[0].clone(), lease.token.clone())),
        messages: vec!["{\"n\":3}".into()],
        response: None,
        done,
    };
    commit_batch(&store.writer, store.limits(), Dialect::Postgres, vec![job]).await;
    let total = answer.await.unwrap().unwrap();
    assert_eq!((total.0 - first.0, total.1), (1, 3));
    let (_, _, messages) = store.get("k", &ids[0]).await.unwrap();
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[2].json, r#"{"n":3}"#);
    drop(lease);
}

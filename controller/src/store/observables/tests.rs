use super::*;
use crate::store::{test_support::backend_tests, NewIncident};

fn incident(id: &str) -> NewIncident {
    NewIncident {
        id: id.into(),
        title: "t".into(),
        kind: "malware".into(),
        severity: "high".into(),
        stage: "alert".into(),
        description: String::new(),
        assignee: None,
        labels: vec![],
        fingerprint: None,
        alert_count: 0,
        created_at_ms: 1_000,
        created_by: "alice".into(),
    }
}

async fn with_incident(store: &Store, id: &str) {
    store
        .create_incident(&incident(id), &[], &[], &format!("stage-{id}"))
        .await
        .expect("create incident");
}

fn hash(value: &str, verdict: Option<Verdict>) -> NewObservable {
    NewObservable {
        kind: ObservableType::Sha256,
        value: value.into(),
        verdict,
        ignore_for_similarity: None,
    }
}

fn note(at_ms: i64) -> NewTimelineEntry {
    NewTimelineEntry {
        at_ms,
        actor: "alice".into(),
        kind: "observable".into(),
        summary: "observable".into(),
        detail: serde_json::json!({}),
    }
}

/// Records and expects the incident to exist.
async fn rec(
    store: &Store,
    incident: &str,
    items: &[NewObservable],
    sighting: &NewSighting,
) -> Vec<Recorded> {
    store
        .record_observables(incident, items, sighting, &note(sighting.at_ms))
        .await
        .unwrap()
        .expect("the incident exists")
}

fn seen(at_ms: i64, source: SightingSource, ref_id: &str) -> NewSighting {
    NewSighting {
        at_ms,
        source,
        ref_id: Some(ref_id.into()),
        agent_id: None,
        actor: "siem".into(),
    }
}

async fn a_value_is_one_observable_however_often_it_is_seen(store: &Store) {
    with_incident(store, "i1").await;
    with_incident(store, "i2").await;
    let a = "a".repeat(64);
    let first = rec(
        store,
        "i1",
        &[hash(&a, None)],
        &seen(10, SightingSource::Alert, "al1"),
    )
    .await;
    assert!(first[0].created);
    let again = rec(
        store,
        "i1",
        &[hash(&a, Some(Verdict::Malicious))],
        &seen(20, SightingSource::Person, "x"),
    )
    .await;
    assert_eq!(
        again[0],
        Recorded {
            id: first[0].id.clone(),
            created: false
        }
    );
    // The same value on another incident is that incident's own.
    let other = rec(
        store,
        "i2",
        &[hash(&a, None)],
        &seen(30, SightingSource::Alert, "al2"),
    )
    .await;
    assert!(other[0].created && other[0].id != first[0].id);

    let listed = store.incident_observables("i1").await.unwrap();
    assert_eq!(listed.len(), 1);
    let one = &listed[0];
    assert_eq!(
        one.verdict,
        Verdict::Malicious,
        "a given verdict is applied"
    );
    assert_eq!(one.sighting_count, 2);
    assert_eq!(one.added_by, "siem");
    let sources: Vec<_> = one.sightings.iter().map(|s| s.source).collect();
    assert_eq!(
        sources,
        [SightingSource::Alert, SightingSource::Person],
        "oldest first"
    );
    assert_eq!(one.updated_at_ms, 20);

    // A later sighting without a verdict keeps the one set.
    rec(
        store,
        "i1",
        &[hash(&a, None)],
        &seen(40, SightingSource::Task, "t1"),
    )
    .await;
    let listed = store.incident_observables("i1").await.unwrap();
    assert_eq!(listed[0].verdict, Verdict::Malicious);
    assert_eq!(listed[0].sighting_count, 3);
}

async fn verdicts_change_and_removal_takes_the_sightings(store: &Store) {
    with_incident(store, "i1").await;
    let recorded = rec(
        store,
        "i1",
        &[hash(&"b".repeat(64), None), hash(&"c".repeat(64), None)],
        &seen(10, SightingSource::Alert, "al1"),
    )
    .await;
    let id = &recorded[0].id;
    assert!(store
        .update_observable("i1", id, Some(Verdict::Benign), Some(true), &note(50))
        .await
        .unwrap());
    let changed = store.get_observable("i1", id).await.unwrap().unwrap();
    assert_eq!(
        (changed.verdict, changed.ignore_for_similarity),
        (Verdict::Benign, true)
    );
    assert!(
        !store
            .update_observable("i2", id, Some(Verdict::Benign), None, &note(50))
            .await
            .unwrap(),
        "another incident's observable is not found"
    );
    assert!(!store.remove_observable("i2", id, &note(60)).await.unwrap());
    assert!(store.remove_observable("i1", id, &note(60)).await.unwrap());
    assert!(!store.remove_observable("i1", id, &note(60)).await.unwrap());
    let left = store.incident_observables("i1").await.unwrap();
    assert_eq!(left.len(), 1);
    let orphans: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM observable_sightings WHERE observable_id = $1")
            .bind(id)
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(orphans, 0);
}

async fn long_values_are_keyed_not_indexed_whole(store: &Store) {
    with_incident(store, "i1").await;
    // Longer than a PostgreSQL index entry may be.
    let long = NewObservable {
        kind: ObservableType::CommandLine,
        value: "x".repeat(20_000),
        verdict: None,
        ignore_for_similarity: None,
    };
    let recorded = rec(
        store,
        "i1",
        &[long.clone(), long],
        &seen(1, SightingSource::Alert, "a"),
    )
    .await;
    assert_eq!(recorded.len(), 2);
    assert!(recorded[0].created && !recorded[1].created);
    assert_eq!(recorded[0].id, recorded[1].id);
}

async fn an_unknown_incident_records_nothing(store: &Store) {
    let none = store
        .record_observables(
            "nope",
            &[hash(&"d".repeat(64), None)],
            &seen(1, SightingSource::Person, "x"),
            &note(1),
        )
        .await
        .unwrap();
    assert!(none.is_none());
}

backend_tests!(
    an_unknown_incident_records_nothing,
    a_value_is_one_observable_however_often_it_is_seen,
    verdicts_change_and_removal_takes_the_sightings,
    long_values_are_keyed_not_indexed_whole,
);

//! The whole controller on PostgreSQL: enrolment, sessions and revocation work the same as on
//! the embedded store. Runs when CORDON_TEST_DATABASE_URL is set (CI sets it).

use cordon_api::agents::AgentStatus;
use cordon_tests::{Deployment, PgSchema};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_on_postgres_enrols_serves_and_revokes() {
    let Some(schema) = PgSchema::create("controller_on_postgres_enrols_serves_and_revokes").await
    else {
        return;
    };
    let mut deployment = Deployment::start_with_database(Some(schema.url())).await;
    let mut agent = deployment.enroll_agent().await;
    agent.start();
    deployment
        .wait_for_status(&agent.id, AgentStatus::Online)
        .await;
    deployment.stop_controller().await;
    deployment.start_controller().await;
    deployment
        .wait_for_status(&agent.id, AgentStatus::Online)
        .await;
    let out = deployment.cli(&["agents", "revoke", &agent.id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    deployment
        .wait_for_status(&agent.id, AgentStatus::Revoked)
        .await;
    agent.stop().await;
    deployment.stop_controller().await;
    schema.drop().await;
}

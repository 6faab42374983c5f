//! The whole controller on PostgreSQL: enrolment, sessions and revocation work the same as on
//! the embedded store. Runs when CORDON_TEST_DATABASE_URL is set (CI sets it).

use cordon_controller::api::types::AgentStatus;
use cordon_tests::{postgres_url, Deployment};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_on_postgres_enrols_serves_and_revokes() {
    let Some(base) = postgres_url("controller_on_postgres_enrols_serves_and_revokes") else {
        return;
    };
    // A schema of its own, so runs never see each other's rows.
    let schema = format!("cordon_e2e_{}", uuid_simple());
    sqlx_exec(&base, &format!("CREATE SCHEMA {schema}")).await;
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");

    let mut deployment = Deployment::start_with_database(Some(url)).await;
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
    sqlx_exec(&base, &format!("DROP SCHEMA {schema} CASCADE")).await;
}

fn uuid_simple() -> String {
    format!("{:x}{:x}", std::process::id(), cordon_controller::now_ms())
}

async fn sqlx_exec(url: &str, sql: &str) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url)
        .await
        .expect("connect to PostgreSQL");
    sqlx::query(sql).execute(&pool).await.expect(sql);
    pool.close().await;
}

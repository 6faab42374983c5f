//! `cordon`: the responder CLI. All of it lives in `cordon_controller::cli`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    cordon_controller::cli::main().await
}

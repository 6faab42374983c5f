//! Writes a small seed corpus for the `frame_decoder` target: each file is the two control bytes
//! (chunking, limit selector; see the target's docs) followed by framed, validly encoded
//! messages, so the fuzzer starts from inputs that reach deep into message decoding.
//!
//! `cargo run --example gen_seeds [OUT_DIR]` (default `seeds/frame_decoder`).

use std::path::PathBuf;

use bytes::BytesMut;
use tokio_util::codec::Encoder;

use cordon_protocol::action::{
    Action, ActionKind, ActionRequest, ActionSignature, PolicySummary, SignedAction,
};
use cordon_protocol::codec;
use cordon_protocol::enroll::{EnrollOutcome, EnrollRequest, EnrollResponse};
use cordon_protocol::frame::FrameCodec;
use cordon_protocol::hello::{AgentHello, ControllerHello, HelloOutcome};
use cordon_protocol::inventory::Inventory;
use cordon_protocol::message::*;
use cordon_protocol::PROTOCOL_VERSION;

fn framed(control: [u8; 2], payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut out = BytesMut::from(&control[..]);
    let mut codec = FrameCodec::new();
    for p in payloads {
        codec.encode(&p[..], &mut out).unwrap();
    }
    out.to_vec()
}

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "seeds/frame_decoder".into()),
    );
    std::fs::create_dir_all(&dir).unwrap();

    let agent_hello = codec::encode(&AgentHello {
        protocol_version: PROTOCOL_VERSION,
        agent_id: "a-1".into(),
        signing_public_key: vec![7u8; 32],
        inventory: Inventory {
            hostname: "web-01".into(),
            os: "Debian GNU/Linux 12".into(),
            kernel: "6.1.0".into(),
            arch: "x86_64".into(),
            addresses: vec!["10.0.0.5".into(), "fe80::1".into()],
            agent_version: "0.1.0".into(),
            boot_time_ms: 1_700_000_000_000,
            action_policy: PolicySummary {
                signers: Vec::new(),
                required_signers: vec![(ActionKind::Isolate, 2)],
                signed_reads: true,
            },
        },
    })
    .unwrap();
    let controller_hello = codec::encode(&ControllerHello {
        protocol_version: PROTOCOL_VERSION,
        controller_version: "0.1.0".into(),
        outcome: HelloOutcome::Accepted {
            heartbeat_interval_ms: 15_000,
        },
    })
    .unwrap();
    let enroll_req = codec::encode(&EnrollRequest {
        protocol_version: PROTOCOL_VERSION,
        token: "tok".into(),
        csr_pem: "-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n".into(),
        hostname: "web-01".into(),
    })
    .unwrap();
    let enroll_resp = codec::encode(&EnrollResponse {
        protocol_version: PROTOCOL_VERSION,
        outcome: EnrollOutcome::Issued {
            agent_id: "a-1".into(),
            certificate_pem: "cert".into(),
            ca_certificate_pem: "ca".into(),
        },
    })
    .unwrap();

    let agent_msgs: Vec<Vec<u8>> = [
        AgentMessage::Heartbeat { seq: 300 },
        AgentMessage::TaskStarted {
            task_id: "t-1".into(),
        },
        AgentMessage::Chunk(Chunk {
            task_id: "t-1".into(),
            seq: 0,
            data: vec![0, 1, 2, 3, 255],
            end: Some(ChunkEnd {
                total_len: 5,
                sha256: "00".into(),
            }),
        }),
        AgentMessage::TaskResult(TaskResult {
            task_id: "t-1".into(),
            outcome: Ok(TaskOutput::Receipt(Receipt {
                action_id: "x".into(),
                agent_id: "a-1".into(),
                at_ms: -1,
                before: "{}".into(),
                done: "kill".into(),
                after: "{}".into(),
                agent_public_key: vec![7; 32],
                signature: vec![9; 64],
            })),
        }),
        AgentMessage::TaskResult(TaskResult {
            task_id: "t-2".into(),
            outcome: Err(TaskError {
                code: TaskErrorCode::PolicyDenied,
                message: "no".into(),
            }),
        }),
        AgentMessage::Event(AgentEvent::FileChanged {
            watch_id: "w".into(),
            path: "/etc/passwd".into(),
            kind: FileChangeKind::Modified,
            at_ms: 1,
        }),
    ]
    .iter()
    .map(|m| codec::encode(m).unwrap())
    .collect();

    let controller_msgs: Vec<Vec<u8>> = [
        ControllerMessage::HeartbeatAck { seq: 300 },
        ControllerMessage::Cancel {
            task_id: "t-1".into(),
        },
        ControllerMessage::Goodbye {
            reason: "bye".into(),
        },
        ControllerMessage::Task(Task {
            task_id: "t-3".into(),
            deadline_ms: i64::MAX,
            kind: TaskKind::ListDir(ListDirRequest {
                path: "/tmp".into(),
                glob: Some("*.so".into()),
                max_depth: 2,
                max_entries: 100,
            }),
        }),
        ControllerMessage::Task(Task {
            task_id: "t-4".into(),
            deadline_ms: 0,
            kind: TaskKind::Hunt(HuntQuery {
                remote_port: Some(4444),
                process_name: Some("nc".into()),
                ..HuntQuery::default()
            }),
        }),
        ControllerMessage::Task(Task {
            task_id: "t-5".into(),
            deadline_ms: 1,
            kind: TaskKind::Action(SignedAction {
                request: ActionRequest {
                    action_id: uuid::Uuid::from_bytes([7; 16]),
                    agent_id: "a-1".into(),
                    issued_at_ms: 1,
                    expires_at_ms: 2,
                    nonce: [3; 16],
                    action: Action::Block {
                        targets: vec!["203.0.113.0/24".into()],
                        ttl_secs: 60,
                    },
                },
                signatures: vec![ActionSignature {
                    key_id: "0123456789abcdef".into(),
                    signature: vec![1; 64],
                }],
            }),
        }),
    ]
    .iter()
    .map(|m| codec::encode(m).unwrap())
    .collect();

    let mut session_agent = vec![agent_hello.clone()];
    session_agent.extend(agent_msgs.iter().cloned());
    let mut session_controller = vec![controller_hello.clone()];
    session_controller.extend(controller_msgs.iter().cloned());

    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("agent_session_whole", framed([0, 0], &session_agent)),
        ("agent_session_bytewise", framed([1, 0], &session_agent)),
        (
            "controller_session_chunks7",
            framed([7, 0], &session_controller),
        ),
        ("enroll_request", framed([0, 0], &[enroll_req])),
        (
            "enroll_response_small_limit",
            framed([3, 0x80 | 32], &[enroll_resp]),
        ),
        ("truncated_tail", {
            let mut v = framed([0, 0], &[agent_hello]);
            v.extend_from_slice(&[0, 0, 0, 9, 1, 2]);
            v
        }),
        ("too_large", vec![0, 0, 0xff, 0xff, 0xff, 0xff]),
    ];
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    println!("wrote seeds to {}", dir.display());
}

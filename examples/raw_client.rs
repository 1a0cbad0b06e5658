//! The floor under `sonde bench`'s client CPU: the same streamed exchange with nothing but
//! a socket. One keep-alive connection, the request's bytes written whole, the chunked SSE
//! answer read until its last chunk, no HTTP library, no parsing, no timing, no record.
//! Whatever this costs per request is the kernel's and the loopback's share of
//! `benches/scripts/bench_client_cpu.sh`'s figure, which runs this beside `sonde bench`.
//!
//! ```sh
//! cargo run --release --example raw_client -- 127.0.0.1:18788 zero 5000
//! ```
//!
//! Its CPU is read from outside (getrusage of the finished child), as the script reads
//! `sonde bench`'s.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What ends a chunked body: the zero-length chunk.
const LAST_CHUNK: &[u8] = b"\r\n0\r\n\r\n";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [address, model, requests] = &args[..] else {
        eprintln!("usage: raw_client HOST:PORT MODEL REQUESTS");
        std::process::exit(2);
    };
    let requests: usize = requests.parse().expect("REQUESTS is a number");
    let body = format!(
        r#"{{"model":"{model}","messages":[{{"role":"user","content":"Count from 1 to 64."}}],"max_tokens":64,"stream":true,"stream_options":{{"include_usage":true}}}}"#
    );
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\naccept: text/event-stream\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async {
        let mut socket = TcpStream::connect(address.as_str())
            .await
            .expect("the simulator listens");
        socket.set_nodelay(true).expect("TCP_NODELAY");
        let mut buffer = vec![0u8; 64 * 1024];
        for _ in 0..requests {
            socket
                .write_all(request.as_bytes())
                .await
                .expect("request sent");
            let mut filled = 0;
            loop {
                let read = socket
                    .read(&mut buffer[filled..])
                    .await
                    .expect("answer read");
                assert!(read > 0, "the server closed the connection");
                filled += read;
                if buffer[..filled].ends_with(LAST_CHUNK) {
                    break;
                }
                if filled == buffer.len() {
                    // Keep the tail: the end marker may straddle the refill.
                    buffer.copy_within(filled - LAST_CHUNK.len()..filled, 0);
                    filled = LAST_CHUNK.len();
                }
            }
        }
    });
}

//! Plain HTTP against a slow or greedy client, over real sockets: a request whose headers or
//! body trickle in is cut off, open HTTP connections are capped, and a slow client cannot hold
//! up shutdown.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_tests::TestServer;

/// How long a test waits for the server to act on a deadline it was given (the deadlines
/// themselves are 10 s for headers and 1 s for the whole request in these tests).
const PATIENCE: Duration = Duration::from_secs(30);

/// Connects to the server's HTTP port.
async fn connect(server: &TestServer) -> anyhow::Result<TcpStream> {
    let addr = server.http_base().trim_start_matches("http://").to_owned();
    Ok(TcpStream::connect(addr).await?)
}

/// Reads until the server closes the connection; what it sent, or an error if it did not
/// close within [`PATIENCE`].
async fn read_until_closed(tcp: &mut TcpStream) -> anyhow::Result<String> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut got)).await;
    match read {
        Ok(_) => Ok(String::from_utf8_lossy(&got).into_owned()),
        Err(_) => anyhow::bail!("the server kept the connection open for {PATIENCE:?}"),
    }
}

/// A client that starts a request and never finishes its headers is disconnected (hyper's
/// header-read deadline), instead of holding a connection and a task for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_that_never_finish_are_cut_off() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut tcp = connect(&server).await?;
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .await?;
    let answer = read_until_closed(&mut tcp).await?;
    assert!(
        !answer.contains("200 OK"),
        "a request with unfinished headers was answered: {answer}"
    );
    Ok(())
}

/// A body that trickles in is answered 408 once the request deadline passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_finishes_gets_408() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.http_timeout_secs = 1).await?;
    let mut tcp = connect(&server).await?;
    tcp.write_all(
        b"POST /api/docs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
          Content-Length: 1000\r\n\r\n{\"id\":",
    )
    .await?;
    let answer = read_until_closed(&mut tcp).await?;
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "expected 408 for a body that never finished, got: {answer}"
    );
    Ok(())
}

/// At `--max-http-connections` the server stops accepting: a further request is not served
/// until a held connection closes, and then it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_http_connections_are_capped() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.max_http_connections = 2).await?;
    let first = connect(&server).await?;
    let second = connect(&server).await?;
    let url = format!("{}/healthz", server.http_base());
    let client = reqwest::Client::new();
    let over_cap = client
        .get(&url)
        .timeout(Duration::from_secs(1))
        .send()
        .await;
    assert!(
        over_cap.is_err(),
        "a third connection was served with two held and a cap of two: {over_cap:?}"
    );
    drop(first);
    drop(second);
    let served = client
        .get(&url)
        .timeout(PATIENCE)
        .send()
        .await?
        .error_for_status()?;
    assert_eq!(served.text().await?, "ok");
    Ok(())
}

/// A client sending its request a byte at a time does not delay shutdown past its grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_does_not_hold_up_shutdown() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut tcp = connect(&server).await?;
    let trickle = tokio::spawn(async move {
        for b in b"POST /api/docs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 99\r\n\r\n" {
            if tcp.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    // `stop` fails if the server has not stopped within its own bound (30 s).
    server.stop().await?;
    trickle.abort();
    Ok(())
}

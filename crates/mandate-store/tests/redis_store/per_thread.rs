//! `connect`'s connection is one connection per thread that sends commands, and a thread whose
//! connection sat idle through a Redis restart is served on its first command afterwards.

use mandate_redis_test::RedisServer;
use mandate_store::PerThreadConnection;

/// Connections the server has, the one asking included.
fn clients(server: &RedisServer) -> usize {
    server.cli(&["CLIENT", "LIST"]).unwrap().lines().count()
}

async fn ping(connection: &PerThreadConnection) -> redis::RedisResult<String> {
    let mut connection = connection.clone();
    redis::cmd("PING").query_async(&mut connection).await
}

/// Runs `ping` on a new thread with its own runtime, as an HTTP worker would.
fn ping_on_another_thread(connection: &PerThreadConnection) -> redis::RedisResult<String> {
    let connection = connection.clone();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async { ping(&connection).await })
    })
    .join()
    .unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn each_thread_has_its_own_connection_and_survives_a_restart() {
    let mut server = RedisServer::start().await.unwrap();
    let before = clients(&server);
    let connection = mandate_store::connect(&server.url()).await.unwrap();
    // `connect` opened this thread's connection; clones on this thread share it.
    assert_eq!(clients(&server), before + 1);
    assert_eq!(ping(&connection).await.unwrap(), "PONG");
    assert_eq!(ping(&connection.clone()).await.unwrap(), "PONG");
    assert_eq!(clients(&server), before + 1);

    // Another thread opens its own, which closes when the thread ends.
    assert_eq!(ping_on_another_thread(&connection).unwrap(), "PONG");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while clients(&server) != before + 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the ended thread's connection is still open"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // This thread's connection is idle while Redis restarts; its next command is served.
    server.restart().await.unwrap();
    assert_eq!(ping(&connection).await.unwrap(), "PONG");

    // While Redis is down, commands fail (callers fail closed).
    server.kill();
    assert!(ping(&connection).await.is_err());
    assert!(ping_on_another_thread(&connection).is_err());
    server.restart().await.unwrap();
    assert_eq!(ping(&connection).await.unwrap(), "PONG");
    assert_eq!(ping_on_another_thread(&connection).unwrap(), "PONG");
}

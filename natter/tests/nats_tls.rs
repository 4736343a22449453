//! TLS to NATS switched on by configuration: a server that requires TLS and client certificates is reached only by a role configured with the CA, a certificate and its key.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use natter::config::NatterConfig;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// A CA, and a server and a client certificate it signed; the server's names are 127.0.0.1 and localhost.
fn issue(dir: &Path) -> anyhow::Result<()> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "natter test CA");
    let ca_key = KeyPair::generate()?;
    let ca = ca_params.self_signed(&ca_key)?;
    let write_leaf = |names: Vec<String>, file_stem: &str| -> anyhow::Result<()> {
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name.push(DnType::CommonName, file_stem);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca, &ca_key)?;
        std::fs::write(dir.join(format!("{file_stem}.pem")), cert.pem())?;
        std::fs::write(dir.join(format!("{file_stem}-key.pem")), key.serialize_pem())?;
        Ok(())
    };
    write_leaf(vec!["127.0.0.1".to_owned(), "localhost".to_owned()], "server")?;
    write_leaf(vec!["natter-gateway".to_owned()], "client")?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    Ok(())
}

fn config(settings: &[(&str, &Path)], nats_url: &str) -> anyhow::Result<NatterConfig> {
    let mut environment: HashMap<String, String> = settings.iter().map(|(name, path)| (name.to_string(), path.display().to_string())).collect();
    environment.insert("NATTER_NATS_URL".to_owned(), nats_url.to_owned());
    NatterConfig::from_file_text_and_environment(None, &environment)
}

#[tokio::test]
async fn roles_reach_a_tls_only_nats_with_the_configured_ca_and_certificate_and_not_otherwise() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    issue(dir.path())?;
    let server_config = dir.path().join("nats-tls.conf");
    std::fs::write(
        &server_config,
        format!(
            "tls {{\n  cert_file: \"{0}/server.pem\"\n  key_file: \"{0}/server-key.pem\"\n  ca_file: \"{0}/ca.pem\"\n  verify: true\n  timeout: 2\n}}\n",
            dir.path().display()
        ),
    )?;
    let nats = devservers::NatsServer::start_with_config(&server_config, &dir.path().join("store")).await?;
    let url = nats.client_url();
    let (ca, cert, key) = (dir.path().join("ca.pem"), dir.path().join("client.pem"), dir.path().join("client-key.pem"));

    // Configured: a round trip over TLS with a client certificate.
    let full = config(&[("NATTER_NATS_TLS_CA", &ca), ("NATTER_NATS_TLS_CERT", &cert), ("NATTER_NATS_TLS_KEY", &key)], &url)?;
    let client = natter::roles::connect_nats(&full, subjects::permissions::Role::Gateway).await?;
    let mut subscriber = client.subscribe("tls.check").await?;
    client.publish("tls.check", "over tls".into()).await?;
    let message = tokio::time::timeout(Duration::from_secs(5), subscriber.next()).await?.expect("the message comes back");
    assert_eq!(message.payload.as_ref(), b"over tls");

    // Not configured, or half configured: refused (plaintext, or TLS without the client certificate the server verifies).
    for (label, settings) in [("plain", vec![]), ("CA only", vec![("NATTER_NATS_TLS_CA", ca.as_path())])] {
        let attempt = tokio::time::timeout(Duration::from_secs(10), natter::roles::connect_nats(&config(&settings, &url)?, subjects::permissions::Role::Gateway)).await;
        assert!(!matches!(attempt, Ok(Ok(_))), "{label}: connected to a server that requires TLS with client certificates");
    }
    // A certificate without its key is a configuration error, named as such.
    let error = natter::roles::connect_nats(&config(&[("NATTER_NATS_TLS_CERT", &cert)], &url)?, subjects::permissions::Role::Gateway).await.err().expect("refused");
    assert!(format!("{error:#}").contains("NATTER_NATS_TLS_KEY"), "{error:#}");
    Ok(())
}

#[tokio::test]
async fn a_cluster_with_tls_on_its_routes_forms_and_replicates_over_them() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    issue(dir.path())?;
    let tls = devservers::RouteTls { cert_file: dir.path().join("server.pem"), key_file: dir.path().join("server-key.pem"), ca_file: dir.path().join("ca.pem") };
    // `start` waits until every node routes to both others, which with this block means over TLS.
    let cluster = devservers::NatsCluster::start_with_route_tls(&dir.path().join("cluster"), Some(&tls)).await?;
    for node in 0..devservers::CLUSTER_SIZE {
        let varz: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{}/varz", cluster.monitoring_port(node))).await?.json().await?;
        assert_eq!(varz["cluster"]["tls_required"], true, "node {node} requires TLS on routes: {}", varz["cluster"]);
        assert_eq!(varz["cluster"]["tls_verify"], true, "node {node} verifies its peers' certificates: {}", varz["cluster"]);

        // A plaintext peer gets no plaintext route protocol: the port hangs up, or says TLS is required.
        let route_port = cluster.node(node).cluster_port().expect("cluster nodes listen for routes");
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", route_port)).await?;
        let mut greeting = vec![0u8; 4096];
        let read = tokio::time::timeout(Duration::from_secs(5), tokio::io::AsyncReadExt::read(&mut stream, &mut greeting)).await??;
        let greeting = String::from_utf8_lossy(&greeting[..read]);
        assert!(greeting.is_empty() || greeting.contains("\"tls_required\":true"), "node {node}'s route port demands TLS: {greeting}");
    }
    // A replicated write needs a quorum, so the routes carry JetStream's traffic.
    let jetstream = async_nats::jetstream::new(async_nats::connect(cluster.node_client_url(0)).await?);
    let stream = jetstream
        .create_stream(async_nats::jetstream::stream::Config { name: "ROUTE_TLS".to_owned(), subjects: vec!["route.tls".to_owned()], num_replicas: 3, ..Default::default() })
        .await?;
    jetstream.publish("route.tls", "replicated".into()).await?.await?;
    assert_eq!(stream.cached_info().config.num_replicas, 3);
    Ok(())
}

//! Push registration, conversation mute and do-not-disturb over HTTP: bad input gets PROTOCOL.md codes and stores nothing.

use reqwest::{Method, StatusCode};
use serde_json::json;
use subjects::Id;
use testkit::push_standins::WebPushSubscriber;
use testkit::TestSystem;
use time::OffsetDateTime;

fn id(text: &str) -> Id {
    Id::parse(text).expect("test ids are valid")
}

#[tokio::test]
async fn registrations_are_validated_stored_and_deleted() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let alice = system.api(0, "alice");
    let push = system.push_storage().await?;
    let subscription = WebPushSubscriber::new(3).subscription_json("https://push.example/subscription/1");
    let refused = [
        ("/v1/devices/a.b/push", json!({"provider": "fcm", "token": "t"})),
        ("/v1/devices/a*/push", json!({"provider": "fcm", "token": "t"})),
        ("/v1/devices/%3E/push", json!({"provider": "fcm", "token": "t"})),
        ("/v1/devices/phone/push", json!({"provider": "gcm", "token": "t"})),
        ("/v1/devices/phone/push", json!({"provider": "fcm"})),
        ("/v1/devices/phone/push", json!({"provider": "apns", "token": "not-hex"})),
        ("/v1/devices/phone/push", json!({"provider": "webpush"})),
        ("/v1/devices/phone/push", json!({"provider": "webpush", "subscription": {"endpoint": "https://x/", "keys": {"p256dh": "AAAA", "auth": "AAAA"}}})),
        ("/v1/devices/phone/push", json!({"token": "t"})),
    ];
    for (path, body) in refused {
        let (status, answer) = alice.post(path, body.clone()).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid", "{path} {body}: {answer}");
    }
    let (status, _) = alice.with_token("garbage").post("/v1/devices/phone/push", json!({"provider": "fcm", "token": "t"})).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(push.registrations_of(&id("alice")).await?.is_empty(), "refused registrations stored nothing");

    let (status, answer) = alice.post("/v1/devices/phone/push", json!({"provider": "fcm", "token": "fcm-token-1"})).await?;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    let (status, answer) = alice.post("/v1/devices/laptop/push", json!({"provider": "webpush", "subscription": subscription})).await?;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    let devices: Vec<String> = push.registrations_of(&id("alice")).await?.into_iter().map(|(device, _)| device.to_string()).collect();
    assert_eq!(devices, ["laptop", "phone"]);

    let (status, _) = alice.request(Method::DELETE, "/v1/devices/phone/push", None).await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, answer) = alice.request(Method::DELETE, "/v1/devices/a.b/push", None).await?;
    assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid")));
    let devices: Vec<String> = push.registrations_of(&id("alice")).await?.into_iter().map(|(device, _)| device.to_string()).collect();
    assert_eq!(devices, ["laptop"]);
    Ok(())
}

#[tokio::test]
async fn mute_is_for_members_and_do_not_disturb_is_per_user() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let alice = system.api(0, "alice");
    let bob = system.api(0, "bob");
    let carol = system.api(0, "carol");
    let push = system.push_storage().await?;
    let conversation = alice.create_direct("bob").await?.id;
    let settings_path = format!("/v1/conversations/{conversation}/settings");
    let tomorrow = (OffsetDateTime::now_utc() + time::Duration::days(1)).replace_nanosecond(0)?;
    let tomorrow_text = tomorrow.format(&time::format_description::well_known::Rfc3339)?;

    let (status, answer) = carol.request(Method::PUT, &settings_path, Some(json!({"muted_until": tomorrow_text}))).await?;
    assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")), "{answer}");
    let (status, answer) = bob.request(Method::PUT, "/v1/conversations/a.b/settings", Some(json!({"muted_until": tomorrow_text}))).await?;
    assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid")), "{answer}");
    let (status, answer) = bob.request(Method::PUT, &settings_path, Some(json!({"muted_until": "tomorrow"}))).await?;
    assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid")), "{answer}");
    let now = OffsetDateTime::now_utc();
    assert!(!push.is_silenced(&id("carol"), &id(&conversation), now).await?);
    assert!(!push.is_silenced(&id("bob"), &id(&conversation), now).await?);

    let (status, answer) = bob.request(Method::PUT, &settings_path, Some(json!({"muted_until": tomorrow_text}))).await?;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["conversation_id"], conversation.as_str());
    assert!(push.is_silenced(&id("bob"), &id(&conversation), OffsetDateTime::now_utc()).await?);
    assert!(!push.is_silenced(&id("alice"), &id(&conversation), OffsetDateTime::now_utc()).await?, "a mute is the muter's only");
    let (status, _) = bob.request(Method::PUT, &settings_path, Some(json!({"muted_until": null}))).await?;
    assert_eq!(status, StatusCode::OK);
    assert!(!push.is_silenced(&id("bob"), &id(&conversation), OffsetDateTime::now_utc()).await?);

    let (status, answer) = alice.request(Method::PUT, "/v1/settings/notifications", Some(json!({"do_not_disturb_until": "soon"}))).await?;
    assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid")), "{answer}");
    let (status, answer) = alice.get("/v1/settings/notifications").await?;
    assert_eq!((status, answer.clone()), (StatusCode::OK, json!({"do_not_disturb_until": null})), "{answer}");
    let (status, _) = alice.request(Method::PUT, "/v1/settings/notifications", Some(json!({"do_not_disturb_until": tomorrow_text}))).await?;
    assert_eq!(status, StatusCode::OK);
    let (_, answer) = alice.get("/v1/settings/notifications").await?;
    assert_eq!(answer["do_not_disturb_until"], tomorrow_text.as_str());
    assert!(push.is_silenced(&id("alice"), &id(&conversation), OffsetDateTime::now_utc()).await?, "do-not-disturb covers every conversation");
    Ok(())
}

//! Signed, expiring media URLs: an HMAC-SHA256 over the grant (who may upload what, or who may read which object until when).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subjects::Id;

type HmacSha256 = Hmac<Sha256>;

/// What a download URL reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownloadKind {
    File,
    Thumbnail,
}

impl DownloadKind {
    pub fn path_segment(self) -> &'static str {
        match self {
            DownloadKind::File => "file",
            DownloadKind::Thumbnail => "thumbnail",
        }
    }
}

/// An upload grant: exactly what the signature covers.
pub struct UploadGrant<'a> {
    pub media: &'a Id,
    pub uploader: &'a str,
    pub size: u64,
    pub content_type: &'a str,
    /// Unix seconds.
    pub expires: i64,
}

pub struct UrlSigner {
    key: [u8; 32],
}

impl UrlSigner {
    /// Derives its own key from the gateway secret, so a URL signature can never double as a token signature.
    pub fn new(gateway_secret: &str) -> UrlSigner {
        let mut hasher = Sha256::new();
        hasher.update(b"natter media url key\0");
        hasher.update(gateway_secret.as_bytes());
        UrlSigner { key: hasher.finalize().into() }
    }

    pub fn sign_upload(&self, grant: &UploadGrant) -> String {
        hex(&self.mac(&upload_parts(grant)).finalize().into_bytes())
    }

    pub fn verify_upload(&self, grant: &UploadGrant, signature: &str) -> bool {
        self.verify(&upload_parts(grant), signature)
    }

    pub fn sign_download(&self, media: &Id, kind: DownloadKind, reader: &str, expires: i64) -> String {
        hex(&self.mac(&download_parts(media, kind, reader, expires)).finalize().into_bytes())
    }

    pub fn verify_download(&self, media: &Id, kind: DownloadKind, reader: &str, expires: i64, signature: &str) -> bool {
        self.verify(&download_parts(media, kind, reader, expires), signature)
    }

    fn mac(&self, parts: &[String]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        // Length-prefixed, so no two different grants can concatenate to the same bytes.
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac
    }

    /// Constant-time comparison (hmac's `verify_slice`).
    fn verify(&self, parts: &[String], signature: &str) -> bool {
        match unhex(signature) {
            Some(bytes) => self.mac(parts).verify_slice(&bytes).is_ok(),
            None => false,
        }
    }
}

fn upload_parts(grant: &UploadGrant) -> Vec<String> {
    vec![
        "upload".to_owned(),
        grant.media.to_string(),
        grant.uploader.to_owned(),
        grant.size.to_string(),
        grant.content_type.to_owned(),
        grant.expires.to_string(),
    ]
}

fn download_parts(media: &Id, kind: DownloadKind, reader: &str, expires: i64) -> Vec<String> {
    vec!["download".to_owned(), media.to_string(), kind.path_segment().to_owned(), reader.to_owned(), expires.to_string()]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len()).step_by(2).map(|index| u8::from_str_radix(&text[index..index + 2], 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_covers_every_field_of_the_grant() {
        let signer = UrlSigner::new("secret");
        let media = Id::parse("m1").unwrap();
        let grant = UploadGrant { media: &media, uploader: "alice", size: 10, content_type: "image/png", expires: 100 };
        let signature = signer.sign_upload(&grant);
        assert!(signer.verify_upload(&grant, &signature));
        let check_refused = |changed: UploadGrant| assert!(!signer.verify_upload(&changed, &signature));
        check_refused(UploadGrant { uploader: "bob", ..grant });
        check_refused(UploadGrant { size: 11, ..grant });
        check_refused(UploadGrant { content_type: "image/gif", ..grant });
        check_refused(UploadGrant { expires: 101, ..grant });
        assert!(!signer.verify_upload(&grant, "zz"));
        assert!(!UrlSigner::new("other").verify_upload(&grant, &signature));
        let download = signer.sign_download(&media, DownloadKind::File, "bob", 5);
        assert!(signer.verify_download(&media, DownloadKind::File, "bob", 5, &download));
        assert!(!signer.verify_download(&media, DownloadKind::Thumbnail, "bob", 5, &download));
        assert!(!signer.verify_download(&media, DownloadKind::File, "carol", 5, &download));
    }
}

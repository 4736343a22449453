//! JWT verification (HS256 pinned; signature, `exp`, and `iss`/`aud` when configured) and dev-mode minting.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use schemas::TokenClaims as Claims;
use subjects::Id;

use crate::api_error::ApiError;
use crate::config::JwtConfig;

pub struct Authenticator {
    decoding_key: DecodingKey,
    encoding_key: EncodingKey,
    validation: Validation,
    config: JwtConfig,
}

impl Authenticator {
    pub fn new(config: &JwtConfig) -> Authenticator {
        // Only HS256 is accepted: a token claiming `none` or another algorithm fails before its signature is looked at.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 30;
        // jsonwebtoken checks `iss`/`aud` only when present unless they are required claims.
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = &config.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match &config.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Authenticator {
            decoding_key: DecodingKey::from_secret(config.secret.as_bytes()),
            encoding_key: EncodingKey::from_secret(config.secret.as_bytes()),
            validation,
            config: config.clone(),
        }
    }

    /// The user a token speaks for, or `unauthorized`.
    pub fn verify(&self, token: &str) -> Result<Id, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding_key, &self.validation)
            .map_err(|error| ApiError::unauthorized(format!("invalid token: {error}")))?;
        Id::parse(&data.claims.sub).map_err(|error| ApiError::unauthorized(format!("token subject is not a valid user id: {error}")))
    }

    /// A token for `user`, signed with the configured secret (dev mode and the CLI).
    pub fn mint(&self, user: &Id) -> String {
        let expires = time::OffsetDateTime::now_utc() + self.config.dev_token_ttl;
        let claims = Claims {
            sub: user.to_string(),
            exp: expires.unix_timestamp().max(0) as u64,
            iss: self.config.issuer.clone(),
            aud: self.config.audience.clone(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding_key).expect("HS256 signing cannot fail")
    }
}

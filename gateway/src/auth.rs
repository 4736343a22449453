//! JWT verification (HS256 pinned; signature, `exp`, and `iss`/`aud` when configured), the analyst role claim, and dev-mode minting.

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
        Ok(self.verify_claims(token)?.user)
    }

    /// The user a token speaks for and, for an analyst's token, the conversations it may search.
    pub fn verify_claims(&self, token: &str) -> Result<VerifiedToken, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding_key, &self.validation)
            .map_err(|error| ApiError::unauthorized(format!("invalid token: {error}")))?;
        let user = Id::parse(&data.claims.sub).map_err(|error| ApiError::unauthorized(format!("token subject is not a valid user id: {error}")))?;
        let analyst_scope = match data.claims.role.as_deref() {
            Some(schemas::ANALYST_ROLE) => Some(match data.claims.analyst_conversations {
                None => AnalystScope::Everything,
                Some(conversations) => AnalystScope::Conversations(
                    conversations
                        .iter()
                        .map(|conversation| Id::parse(conversation))
                        .collect::<Result<_, _>>()
                        .map_err(|error| ApiError::unauthorized(format!("token names an invalid analyst conversation: {error}")))?,
                ),
            }),
            _ => None,
        };
        Ok(VerifiedToken { user, analyst_scope })
    }

    /// A token for `user`, signed with the configured secret (dev mode and the CLI).
    pub fn mint(&self, user: &Id) -> String {
        self.mint_claims(user, None, None)
    }

    /// An analyst's token for `user`: every conversation, or only `conversations` (the CLI and tests).
    pub fn mint_analyst(&self, user: &Id, conversations: Option<&[Id]>) -> String {
        let scope = conversations.map(|conversations| conversations.iter().map(Id::to_string).collect());
        self.mint_claims(user, Some(schemas::ANALYST_ROLE.to_owned()), scope)
    }

    fn mint_claims(&self, user: &Id, role: Option<String>, analyst_conversations: Option<Vec<String>>) -> String {
        let expires = time::OffsetDateTime::now_utc() + self.config.dev_token_ttl;
        let claims = Claims {
            sub: user.to_string(),
            exp: expires.unix_timestamp().max(0) as u64,
            iss: self.config.issuer.clone(),
            aud: self.config.audience.clone(),
            role,
            analyst_conversations,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding_key).expect("HS256 signing cannot fail")
    }
}

/// What a verified token says about its bearer.
pub struct VerifiedToken {
    pub user: Id,
    /// `Some` only for a token with the analyst role.
    pub analyst_scope: Option<AnalystScope>,
}

/// The conversations an analyst's token may search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnalystScope {
    Everything,
    Conversations(Vec<Id>),
}

//! The smarthost password where `RELAY_SMARTHOST_PASSWORD_SECRET` keeps it: a Secrets Manager
//! secret or an SSM parameter, read by ARN (the function's role may read that one and nothing
//! else). A Secrets Manager secret holding a JSON object gives its `password` field; any other
//! value is the password as it is.

use async_trait::async_trait;

use crate::config::SecretRef;
use crate::deliver::credentials::SecretSource;

/// A reader of one secret.
pub struct AwsSecret {
    secret: SecretRef,
    secrets_manager: aws_sdk_secretsmanager::Client,
    ssm: aws_sdk_ssm::Client,
}

impl AwsSecret {
    pub fn new(secret: SecretRef, sdk: &aws_config::SdkConfig) -> Self {
        Self { secret, secrets_manager: aws_sdk_secretsmanager::Client::new(sdk), ssm: aws_sdk_ssm::Client::new(sdk) }
    }
}

/// The password in a Secrets Manager secret string.
pub fn password_of(secret_string: &str) -> String {
    let field = serde_json::from_str::<serde_json::Value>(secret_string)
        .ok()
        .and_then(|v| v.get("password")?.as_str().map(String::from));
    field.unwrap_or_else(|| secret_string.to_string())
}

#[async_trait]
impl SecretSource for AwsSecret {
    async fn read(&self) -> Result<String, String> {
        match &self.secret {
            SecretRef::SecretsManager(arn) => {
                let out = self
                    .secrets_manager
                    .get_secret_value()
                    .secret_id(arn)
                    .send()
                    .await
                    .map_err(|e| aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string())?;
                out.secret_string().map(password_of).ok_or_else(|| "the secret has no string value".to_string())
            }
            SecretRef::Ssm(arn) => {
                let out = self
                    .ssm
                    .get_parameter()
                    .name(arn)
                    .with_decryption(true)
                    .send()
                    .await
                    .map_err(|e| aws_sdk_ssm::error::DisplayErrorContext(e).to_string())?;
                out.parameter()
                    .and_then(|p| p.value())
                    .map(String::from)
                    .ok_or_else(|| "the parameter has no value".into())
            }
        }
    }

    fn name(&self) -> &str {
        self.secret.arn()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_secret_gives_its_password_field() {
        assert_eq!(password_of("s3cret"), "s3cret");
        assert_eq!(password_of(r#"{"username":"relay","password":"p{w}"}"#), "p{w}");
        assert_eq!(password_of(r#"{"user":"relay"}"#), r#"{"user":"relay"}"#, "no password field: as it is");
        assert_eq!(password_of("\"quoted\""), "\"quoted\"");
    }
}

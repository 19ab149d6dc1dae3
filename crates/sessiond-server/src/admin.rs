//! The admin commands (`migrate`, `keys`, `sessions`, `api-keys`, `gc`): one-shot work on the
//! same database as the server, also while it runs. Part of the binary: the library gives it
//! [`sessiond_server::migrate`] and [`sessiond_server::open_service`].

use anyhow::Context as _;
use sessiond::keys::{KeyError, KeyOrigin, KeyPurpose};
use sessiond::{KeyId, RevokeReason, SessionError, SessionId, Tenant, UserId};
use sessiond_server::{Config, Secrets};

use crate::cli::{ApiKeysAction, Command, KeysAction, Purpose, SessionsAction};

/// Runs an admin command (every command but `serve`) against the configured database.
pub async fn run(command: Command, config: Config, secrets: &Secrets) -> anyhow::Result<()> {
    if let Command::Migrate = command {
        sessiond_server::migrate(&config).await?;
        println!("migrations applied to {}", config.database.redacted());
        return Ok(());
    }
    if let Command::ApiKeys { action } = command {
        return api_keys(action, &config).await;
    }
    let service = sessiond_server::open_service(&config, secrets).await?;
    match command {
        Command::Keys {
            action: KeysAction::List,
        } => {
            println!(
                "{:<28} {:<8} {:<6} {:<8} {:<9} {:<26} verify_until",
                "id", "purpose", "alg", "state", "origin", "created_at"
            );
            for k in service.keys().list().await? {
                let state = if k.is_active() { "active" } else { "retired" };
                let until = k
                    .verify_until
                    .map_or_else(|| "-".to_owned(), |t| t.to_rfc3339());
                println!(
                    "{:<28} {:<8} {:<6} {:<8} {:<9} {:<26} {until}",
                    k.id.as_str(),
                    k.purpose.as_str(),
                    k.algorithm.as_str(),
                    state,
                    k.origin.as_str(),
                    k.created_at.to_rfc3339()
                );
            }
        }
        Command::Keys {
            action: KeysAction::Rotate { purpose },
        } => {
            let purposes: Vec<KeyPurpose> = match purpose {
                Some(Purpose::Cookie) => vec![KeyPurpose::Cookie],
                Some(Purpose::Access) => vec![KeyPurpose::Access],
                Some(Purpose::Refresh) => vec![KeyPurpose::Refresh],
                None => KeyPurpose::ALL.to_vec(),
            };
            let all = purpose.is_none();
            for p in purposes {
                match service.rotate_key(p).await {
                    Ok(info) => println!(
                        "rotated {p} key: new active key {} ({}); the previous one verifies until {}",
                        info.id,
                        info.algorithm,
                        service
                            .now()
                            .saturating_add(service.keys().policy().retention_for(p))
                    ),
                    Err(SessionError::Keys(KeyError::OperatorManaged(_))) if all => println!(
                        "skipped the {p} key: it is operator-supplied (token_sessions.hs256_secret); \
                         configure a new secret to replace it, or end it with `sessiond keys retire`"
                    ),
                    Err(SessionError::Keys(KeyError::OperatorManaged(_))) => {
                        anyhow::bail!(
                            "the {p} key was not rotated: it is operator-supplied \
                             (token_sessions.hs256_secret); configure a new secret to replace \
                             it, or end it at once with `sessiond keys retire`"
                        )
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Command::Keys {
            action: KeysAction::Retire { id },
        } => {
            let id = KeyId::parse(&id).context("key id (expected sk-…)")?;
            let done = service.retire_key(&id).await?;
            let key = &done.key;
            let until = key
                .verify_until
                .map_or_else(|| "-".to_owned(), |t| t.to_rfc3339());
            if !done.ended {
                println!(
                    "{id} ({} {}) had already stopped verifying (verify_until {until}); nothing changed",
                    key.purpose, key.algorithm
                );
                return Ok(());
            }
            println!(
                "ended {id} ({} {}, {}) at {until}: it verifies nothing from now on; nodes that \
                 are running stop using it within {}s (their key snapshot age), at once when \
                 they see a credential signed by a newer key",
                key.purpose,
                key.algorithm,
                key.origin,
                service.keys().policy().cache_ttl.as_secs()
            );
            if let Some(new) = &done.replacement {
                println!(
                    "new active {} key: {} ({}, generated)",
                    new.purpose, new.id, new.algorithm
                );
            }
            if key.origin == KeyOrigin::Operator {
                println!(
                    "note: {id} was operator-supplied (token_sessions.hs256_secret). That secret is \
                     never used again: a node still configured with it refuses to start. Configure \
                     a new secret on every node (and on the resource servers that share it); until \
                     then access tokens are signed by the generated key above, which they do not hold."
                );
            }
        }
        Command::Sessions {
            action: SessionsAction::List { user, tenant },
        } => {
            let user = UserId::new(user).context("--user")?;
            let tenant = tenant.map(Tenant::new).transpose().context("--tenant")?;
            let sessions = service.user_sessions(&user, tenant.as_ref()).await?;
            println!(
                "{:<28} {:<8} {:<10} {:<26} {:<26} absolute_expires_at",
                "id", "kind", "tenant", "created_at", "last_seen_at"
            );
            for s in &sessions {
                println!(
                    "{:<28} {:<8} {:<10} {:<26} {:<26} {}",
                    s.id.as_str(),
                    s.kind.as_str(),
                    s.tenant.as_str(),
                    s.created_at.to_rfc3339(),
                    s.last_seen_at.to_rfc3339(),
                    s.absolute_expires_at.to_rfc3339()
                );
            }
            println!("{} active session(s)", sessions.len());
        }
        Command::Sessions {
            action: SessionsAction::Revoke { id, reason },
        } => {
            let id = SessionId::parse(&id).context("session id (expected ses-…)")?;
            let reason = RevokeReason::new(&reason).context("--reason")?;
            let outcome = service.revoke(&id, &reason).await?;
            println!("{id}: {outcome:?}");
        }
        Command::Sessions {
            action:
                SessionsAction::RevokeAll {
                    user,
                    except,
                    tenant,
                },
        } => {
            let user = UserId::new(user).context("--user")?;
            let except = except
                .map(|e| SessionId::parse(&e))
                .transpose()
                .context("--except (expected ses-…)")?;
            let tenant = tenant.map(Tenant::new).transpose().context("--tenant")?;
            let ids = service
                .revoke_user(
                    &user,
                    tenant.as_ref(),
                    except.as_ref(),
                    &RevokeReason::revoked_all(),
                )
                .await?;
            println!("revoked {} session(s)", ids.len());
        }
        Command::Gc => {
            let report = service.gc().await?;
            println!(
                "deleted {} expired session(s), {} claim(s), {} retired key(s)",
                report.sessions, report.claims, report.keys
            );
        }
        Command::Serve { .. } | Command::Migrate | Command::ApiKeys { .. } => {}
    }
    Ok(())
}

/// `sessiond api-keys …`: needs the database only, not the master key.
async fn api_keys(action: ApiKeysAction, config: &Config) -> anyhow::Result<()> {
    let api_keys = sessiond_server::open_api_keys(config).await?;
    match action {
        ApiKeysAction::Create { name, scope } => {
            let (info, key) = api_keys.create(&name, scope).await?;
            println!(
                "created API key {} ({}, scope {})",
                info.id,
                info.name,
                info.scope.as_str()
            );
            println!("{}", key.expose());
            eprintln!("This is the only time the key is shown; sessiond stores only its hash.");
        }
        ApiKeysAction::List => {
            println!(
                "{:<28} {:<24} {:<7} {:<26} revoked_at",
                "id", "name", "scope", "created_at"
            );
            for k in api_keys.list().await? {
                println!(
                    "{:<28} {:<24} {:<7} {:<26} {}",
                    k.id.as_str(),
                    k.name,
                    k.scope.as_str(),
                    k.created_at.to_rfc3339(),
                    k.revoked_at
                        .map_or_else(|| "-".to_owned(), |t| t.to_rfc3339())
                );
            }
        }
        ApiKeysAction::Revoke { id } => {
            let id = sessiond::ApiKeyId::parse(&id).context("API key id (expected ak-…)")?;
            let revoked = api_keys.revoke(&id).await?;
            println!(
                "{id}: {}",
                if revoked {
                    "revoked"
                } else {
                    "not found or already revoked"
                }
            );
        }
    }
    Ok(())
}

use crate::db::{Db, Tx, lock_devices};
use crate::devices::model::{Device, device_columns};
use crate::devices::service::{IdRow, device_not_found};
use crate::error::{DomainError, DomainResult, codes, is_unique_violation};
use crate::links::model::Link;
use crate::pagination::{Page, PageQuery};
use crate::time;
use crate::{db_fetch_all, db_fetch_optional, keyset_page, tx_execute, tx_fetch_optional};

/// Links a camera to a client. Both devices' rows are locked first, as a role change locks
/// its device before it looks for links: whichever of the two comes second sees what the
/// first did, so a link never joins devices whose roles changed under it.
pub async fn create(
    db: &Db,
    user_id: &str,
    camera_id: &str,
    client_id: &str,
) -> DomainResult<Link> {
    let mut tx = db.begin().await?;
    lock_devices(&mut tx, &[camera_id, client_id]).await?;
    let camera = device_in(&mut tx, user_id, camera_id).await?;
    let client = device_in(&mut tx, user_id, client_id).await?;
    if !camera.is_camera() {
        return Err(DomainError::validation(
            "cameraDeviceId must be a device with role camera",
        ));
    }
    if !client.is_client() {
        return Err(DomainError::validation(
            "clientDeviceId must be a device with role client",
        ));
    }
    let link = Link {
        id: crate::pagination::new_row_id(),
        camera_device_id: camera.id,
        client_device_id: client.id,
        created_at: time::now(),
    };
    let inserted = tx_execute!(
        &mut tx,
        "INSERT INTO device_links (id, user_id, camera_device_id, client_device_id, created_at) VALUES ($1, $2, $3, $4, $5)",
        [
            &link.id,
            user_id,
            &link.camera_device_id,
            &link.client_device_id,
            link.created_at
        ]
    );
    match inserted {
        Ok(_) => {
            tx.commit().await?;
            Ok(link)
        }
        Err(e) if is_unique_violation(&e) => Err(DomainError::conflict(
            codes::LINK_EXISTS,
            "These devices are already linked",
        )),
        Err(e) => Err(e.into()),
    }
}

/// The user's device as `tx` sees it, or 404.
async fn device_in(tx: &mut Tx, user_id: &str, device_id: &str) -> DomainResult<Device> {
    tx_fetch_optional!(
        &mut *tx,
        Device,
        concat!(
            "SELECT ",
            device_columns!(),
            " FROM devices WHERE id = $1 AND user_id = $2"
        ),
        [device_id, user_id]
    )?
    .ok_or_else(device_not_found)
}

pub async fn list(db: &Db, user_id: &str, page: &PageQuery) -> DomainResult<Page<Link>> {
    let keyset = page.keyset()?;
    let rows = db_fetch_all!(
        db,
        Link,
        concat!(
            "SELECT id, camera_device_id, client_device_id, created_at FROM device_links
             WHERE user_id = $1 AND",
            keyset_page!(2, 3, 4, 5)
        ),
        [user_id, keyset.at, keyset.at, &keyset.id, keyset.fetch]
    )?;
    Ok(keyset.page(rows))
}

/// Removes the link and returns it (the caller revokes what it allowed).
pub async fn delete(db: &Db, user_id: &str, link_id: &str) -> DomainResult<Link> {
    db_fetch_optional!(
        db,
        Link,
        "DELETE FROM device_links WHERE id = $1 AND user_id = $2
         RETURNING id, camera_device_id, client_device_id, created_at",
        [link_id, user_id]
    )?
    .ok_or_else(|| DomainError::not_found(codes::NOT_FOUND, "Link not found"))
}

pub async fn are_linked(db: &Db, camera_id: &str, client_id: &str) -> DomainResult<bool> {
    Ok(db_fetch_optional!(
        db,
        IdRow,
        "SELECT id FROM device_links WHERE camera_device_id = $1 AND client_device_id = $2",
        [camera_id, client_id]
    )?
    .is_some())
}

/// Client devices linked to a camera (the audience of its events).
pub async fn clients_of(db: &Db, camera_id: &str) -> DomainResult<Vec<String>> {
    Ok(db_fetch_all!(
        db,
        IdRow,
        "SELECT client_device_id AS id FROM device_links WHERE camera_device_id = $1",
        [camera_id]
    )?
    .into_iter()
    .map(|r| r.id)
    .collect())
}

#!/bin/sh
# minio-init: creates the buckets with versioning enabled, checks that it is, and creates the
# retention system's own MinIO user (it does not use the root credentials). Safe to run again.
# The receipts bucket is created with Object Lock: the ledger's anchors are written there
# write-once (COMPLIANCE), so nobody who can rewrite the ledger can also rewrite its anchors.
# Object Lock can only be chosen when a bucket is created.
set -eu

BUCKETS="alleskar-documents alleskar-privacy-receipts"

mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null

for bucket in $BUCKETS; do
    lock=""
    [ "$bucket" = "alleskar-privacy-receipts" ] && lock="--with-lock"
    mc mb --ignore-existing $lock --region eu-north-1 "local/$bucket"
    mc version enable "local/$bucket"
    # Erasure must remove every object version: refuse to go on with an unversioned bucket.
    case "$(mc version info "local/$bucket")" in
        *"versioning is enabled"*) ;;
        *) echo "minio-init: versioning is not enabled on $bucket" >&2; exit 1 ;;
    esac
done

mc admin user add local "$RETENTION_S3_ACCESS_KEY" "$RETENTION_S3_SECRET_KEY" >/dev/null
# Attaching a policy that is already attached is an error, so attach only the first time.
case "$(mc admin user info --json local "$RETENTION_S3_ACCESS_KEY")" in
    *readwrite*) ;;
    *) mc admin policy attach local readwrite --user "$RETENTION_S3_ACCESS_KEY" >/dev/null ;;
esac

echo "minio-init: buckets $BUCKETS versioned; retention user ready"

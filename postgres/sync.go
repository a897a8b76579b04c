package postgres

import (
	"context"
	"fmt"
)

// SetSynchronous makes the primary at dsn wait for a synchronous standby
// (on: synchronous_standby_names = '*', any streaming standby) or commit
// alone (off: synchronous_standby_names set to the empty string), through
// ALTER SYSTEM, then
// reloads. A primary promoted after its
// synchronous partner died must not wait for it: writes would hang; once
// a standby streams again, synchronous commit is restored.
func SetSynchronous(ctx context.Context, dsn string, on bool) error {
	ep := newEndpoint(dsn, map[string]string{"default_transaction_read_only": "off"})
	defer closeEndpoint(ep)
	stmt := "ALTER SYSTEM SET synchronous_standby_names = ''"
	if on {
		stmt = "ALTER SYSTEM SET synchronous_standby_names = '*'"
	}
	if err := execSQL(ctx, ep, stmt); err != nil {
		return fmt.Errorf("%s: %w", stmt, err)
	}
	if err := execSQL(ctx, ep, "SELECT pg_reload_conf()"); err != nil {
		return fmt.Errorf("pg_reload_conf(): %w", err)
	}
	return nil
}

// SynchronousNames reads synchronous_standby_names as a new session sees it.
func SynchronousNames(ctx context.Context, dsn string) (string, error) {
	ep := newEndpoint(dsn, nil)
	defer closeEndpoint(ep)
	var v string
	if err := scanRow(ctx, ep, "SHOW synchronous_standby_names", nil, &v); err != nil {
		return "", err
	}
	return v, nil
}

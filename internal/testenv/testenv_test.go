package testenv

import (
	"context"
	"testing"
	"time"
)

func TestPostgresStreamingReplication(t *testing.T) {
	for _, sync := range []bool{false, true} {
		name := "async"
		if sync {
			name = "sync"
		}
		t.Run(name, func(t *testing.T) {
			pg := StartPostgres(t, PGOptions{Sync: sync})
			pg.Primary.Exec(t, "CREATE TABLE accounts (id int PRIMARY KEY, owner text)")
			pg.Primary.Exec(t, "INSERT INTO accounts SELECT g, 'owner-' || g FROM generate_series(1, 100) g")

			var inRecovery bool
			if err := pg.Standby.QueryRow(t, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil || !inRecovery {
				t.Fatalf("standby pg_is_in_recovery = %v, %v", inRecovery, err)
			}
			var count int
			var owner string
			waitFor(t, "rows on the standby", 10*time.Second, func() error {
				return pg.Standby.QueryRow(t, "SELECT count(*), max(owner) FROM accounts").Scan(&count, &owner)
			})
			if count != 100 || owner != "owner-99" {
				t.Fatalf("standby has %d rows, max owner %q; want 100, owner-99", count, owner)
			}
			var state string
			if err := pg.Primary.QueryRow(t, "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby'").Scan(&state); err != nil {
				t.Fatal(err)
			}
			want := "async"
			if sync {
				want = "sync"
			}
			if state != want {
				t.Errorf("sync_state = %q, want %q", state, want)
			}
			// The standby refuses writes.
			c := pg.Standby.Conn(t)
			if _, err := c.Exec(context.Background(), "INSERT INTO accounts VALUES (101, 'x')"); err == nil {
				t.Error("standby accepted a write")
			}
		})
	}
}

func TestPostgresStopAndStart(t *testing.T) {
	pg := StartPostgres(t, PGOptions{})
	pg.Primary.Stop(t, "immediate")
	var one int
	if err := pg.Primary.QueryRow(t, "SELECT 1").Scan(&one); err == nil {
		t.Fatal("stopped primary still answers")
	}
	pg.Primary.Start(t)
	pg.WaitStreaming(t)
}

func TestRedisReplication(t *testing.T) {
	r := StartRedis(t)
	ctx := context.Background()
	if err := r.Primary.Client(t).Set(ctx, "greeting", "hello from the primary", 0).Err(); err != nil {
		t.Fatal(err)
	}
	replica := r.Replica.Client(t)
	var got string
	waitFor(t, "key on the replica", 10*time.Second, func() error {
		var err error
		got, err = replica.Get(ctx, "greeting").Result()
		return err
	})
	if got != "hello from the primary" {
		t.Fatalf("replica has %q", got)
	}
	role, err := replica.Do(ctx, "ROLE").Slice()
	if err != nil || role[0] != "slave" {
		t.Fatalf("replica ROLE = %v, %v", role, err)
	}
	if err := replica.Set(ctx, "k", "v", 0).Err(); err == nil {
		t.Error("replica accepted a write")
	}
	r.Primary.Kill(t)
	if err := r.Primary.Client(t).Ping(ctx).Err(); err == nil {
		t.Error("killed primary still answers")
	}
}

package notify

import (
	"testing"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/control"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name     string
		e        control.Event
		kind     string // "": no notification
		severity string
		key      string
	}{
		{"region down", control.Event{Type: control.EventRegion, Region: "east", Status: "down"}, config.NotifyRegionDown, control.SeverityCritical, "region-down/east/down"},
		{"region degraded", control.Event{Type: control.EventRegion, Region: "east", Status: "degraded"}, "", "", ""},
		{"region up", control.Event{Type: control.EventRegion, Region: "east", Status: "up"}, "", "", ""},
		{"step waits", control.Event{Type: control.EventStep, Run: "r1", Step: "promote", Status: "waiting-approval", Message: "step promote waits for the approval of a operator"},
			config.NotifyApprovalNeeded, control.SeverityWarning, "approval-needed/r1/promote"},
		{"step approved", control.Event{Type: control.EventStep, Run: "r1", Step: "promote", Status: "waiting-approval", Message: "step promote approved by ann (operator)"}, "", "", ""},
		{"run waits", control.Event{Type: control.EventRun, Run: "r1", Status: "waiting-approval", Message: "failover waits"}, config.NotifyApprovalNeeded, control.SeverityWarning, "approval-needed/r1"},
		{"run started", control.Event{Type: control.EventRun, Run: "r1", Status: "running", Message: "failover east → west started (auto)"}, config.NotifyRunStarted, control.SeverityInfo, "run-started/r1"},
		{"run resumed", control.Event{Type: control.EventRun, Run: "r1", Status: "running", Message: "run r1 resumed by a new leader (1)"}, "", "", ""},
		{"run running otherwise", control.Event{Type: control.EventRun, Run: "r1", Status: "running", Message: "something"}, "", "", ""},
		{"run succeeded", control.Event{Type: control.EventRun, Run: "r1", Status: "succeeded"}, config.NotifyRunCompleted, control.SeverityInfo, "run-completed/r1"},
		{"run failed", control.Event{Type: control.EventRun, Run: "r1", Status: "failed"}, config.NotifyRunFailed, control.SeverityCritical, "run-failed/r1"},
		{"run rolled back", control.Event{Type: control.EventRun, Run: "r1", Status: "rolled-back"}, config.NotifyRunFailed, control.SeverityCritical, "run-failed/r1"},
		{"step failed", control.Event{Type: control.EventStep, Run: "r1", Status: "failed"}, "", "", ""},
		{"readiness lost", control.Event{Type: control.EventReadiness, Service: "db", Region: "west", Status: "not-ready"}, config.NotifyReadinessLost, control.SeverityWarning, "readiness-lost/db/west/not-ready"},
		{"readiness back", control.Event{Type: control.EventReadiness, Service: "db", Region: "west", Status: "ready"}, "", "", ""},
		{"exposure breached", control.Event{Type: control.EventExposure, Service: "db", Region: "west", Status: "breached"}, config.NotifyExposureBreached, control.SeverityWarning, "exposure-breached/db/west/breached"},
		{"exposure ok", control.Event{Type: control.EventExposure, Service: "db", Region: "west", Status: "ok"}, "", "", ""},
		{"drill lost writes", control.Event{Type: control.EventDrill, Status: "measured", Run: "r2", Severity: control.SeverityCritical}, config.NotifyDrillResult, control.SeverityCritical, "drill-result/r2"},
		{"drill clean", control.Event{Type: control.EventDrill, Status: "measured", Seq: 7}, config.NotifyDrillResult, control.SeverityInfo, "drill-result/7"},
		{"scheduled drill failed", control.Event{Type: control.EventDrill, Status: "failed", Seq: 8, Severity: control.SeverityWarning}, config.NotifyDrillResult, control.SeverityWarning, "drill-result/8"},
		{"delivery record", control.Event{Type: control.EventNotification, Status: "failed", Severity: control.SeverityCritical, Run: "r1"}, "", "", ""},
		{"audit", control.Event{Type: control.EventAudit, Status: "500"}, "", "", ""},
		{"verdict", control.Event{Type: control.EventVerdict, Status: "down"}, "", "", ""},
		{"scheduled drill started", control.Event{Type: control.EventDrill, Status: "started"}, "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, ok := Classify(tc.e)
			if ok != (tc.kind != "") {
				t.Fatalf("Classify: %+v %v, want a notification: %v", n, ok, tc.kind != "")
			}
			if !ok {
				return
			}
			if n.Kind != tc.kind || n.Severity != tc.severity || n.Key != tc.key {
				t.Errorf("kind %q severity %q key %q, want %q %q %q", n.Kind, n.Severity, n.Key, tc.kind, tc.severity, tc.key)
			}
			if n.Title == "" || n.Event != tc.e {
				t.Errorf("title %q, event %+v", n.Title, n.Event)
			}
		})
	}
}

func TestClassifyCoversEveryKind(t *testing.T) {
	events := []control.Event{
		{Type: control.EventRegion, Status: "down"}, {Type: control.EventStep, Status: "waiting-approval"},
		{Type: control.EventRun, Status: "running", Message: "started"}, {Type: control.EventRun, Status: "succeeded"},
		{Type: control.EventRun, Status: "failed"}, {Type: control.EventReadiness, Status: "not-ready"},
		{Type: control.EventExposure, Status: "breached"}, {Type: control.EventDrill, Status: "measured"},
	}
	seen := map[string]bool{}
	for _, e := range events {
		if n, ok := Classify(e); ok {
			seen[n.Kind] = true
		}
	}
	for _, k := range config.NotificationKinds() {
		if !seen[k] {
			t.Errorf("no event is classified as %s", k)
		}
	}
}

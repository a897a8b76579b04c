// Package notify tells people what Lifeboat does: it turns events of the
// stream (a region down, a run waiting for approval, a run failed, ...)
// into notifications and delivers them to the configured channels
// (signed webhooks, Slack, Microsoft Teams, email).
//
// Classify maps an event to a Notification. A Dispatcher delivers
// notifications without ever blocking its caller: one bounded queue and one
// goroutine per channel, filters by kind and severity, de-duplication,
// retries with back-off, and a delivery record of every outcome. A Follower
// feeds the dispatcher from the event stream on the leader only, and saves
// its position so that the next leader continues where it stopped.
package notify

import (
	"fmt"
	"strings"

	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/control"
	"github.com/lifeboat-dr/lifeboat/runbook"
)

// Notification is one thing to tell people about.
type Notification struct {
	// Kind is one of config.NotificationKinds: what channels filter on.
	Kind string `json:"kind"`
	// Severity is control.SeverityInfo, SeverityWarning or
	// SeverityCritical.
	Severity string `json:"severity"`
	// Title is one line; Text says more (the event's message).
	Title string `json:"title"`
	Text  string `json:"text"`
	// Event is the event the notification is about.
	Event control.Event `json:"event"`
	// Key identifies what the notification is about (kind and run, or
	// kind, service, region and status): a channel sends one notification
	// per key within the dispatcher's de-duplication window. Empty: never
	// de-duplicated.
	Key string `json:"key"`
	// ID identifies one delivery to one channel, the same for every
	// attempt (the webhook's X-Lifeboat-Delivery, the email's
	// Message-ID). The dispatcher sets it; a sink called directly makes
	// one up when it is empty.
	ID string `json:"id"`
}

// Classify says whether an event is worth a notification, and which. It is
// a pure function of the event:
//
//	region, status down                      region-down, critical
//	step or run, status waiting-approval     approval-needed, warning
//	run, status running, message "started"   run-started, info (not "resumed")
//	run, status succeeded                    run-completed, info
//	run, status failed or rolled-back        run-failed, critical
//	readiness, status not-ready              readiness-lost, warning
//	exposure, status breached                exposure-breached, warning
//	drill                                    drill-result, the event's severity
//
// Delivery records (control.EventNotification) are never notified about,
// nor is anything else.
func Classify(e control.Event) (Notification, bool) {
	n := Notification{Event: e, Text: e.Message}
	switch e.Type {
	case control.EventRegion:
		if e.Status != "down" {
			return Notification{}, false
		}
		n.Kind, n.Severity = config.NotifyRegionDown, control.SeverityCritical
		n.Title = fmt.Sprintf("Region %s is down", e.Region)
		n.Key = key(n.Kind, e.Region, e.Status)
	case control.EventStep:
		// An approved step keeps its waiting status until it starts: the
		// approval's own event is no call for one.
		if e.Status != runbook.StatusWaitingApproval || strings.Contains(e.Message, "approved") {
			return Notification{}, false
		}
		n.Kind, n.Severity = config.NotifyApprovalNeeded, control.SeverityWarning
		n.Title = fmt.Sprintf("Run %s waits for approval of step %s", e.Run, e.Step)
		n.Text = fmt.Sprintf("%s\nApprove it with: lifeboat approve %s %s", e.Message, e.Run, e.Step)
		n.Key = key(n.Kind, e.Run, e.Step)
	case control.EventRun:
		switch e.Status {
		case runbook.StatusWaitingApproval:
			n.Kind, n.Severity = config.NotifyApprovalNeeded, control.SeverityWarning
			n.Title = fmt.Sprintf("Run %s waits for approval", e.Run)
			n.Key = key(n.Kind, e.Run)
		case runbook.StatusRunning:
			if !strings.Contains(e.Message, "started") || strings.Contains(e.Message, "resumed") {
				return Notification{}, false
			}
			n.Kind, n.Severity = config.NotifyRunStarted, control.SeverityInfo
			n.Title = fmt.Sprintf("Run %s started", e.Run)
			n.Key = key(n.Kind, e.Run)
		case runbook.StatusSucceeded:
			n.Kind, n.Severity = config.NotifyRunCompleted, control.SeverityInfo
			n.Title = fmt.Sprintf("Run %s succeeded", e.Run)
			n.Key = key(n.Kind, e.Run)
		case runbook.StatusFailed, runbook.StatusRolledBack:
			n.Kind, n.Severity = config.NotifyRunFailed, control.SeverityCritical
			n.Title = fmt.Sprintf("Run %s %s", e.Run, strings.ReplaceAll(e.Status, "-", " "))
			n.Key = key(n.Kind, e.Run)
		default:
			return Notification{}, false
		}
	case control.EventReadiness:
		if e.Status != "not-ready" {
			return Notification{}, false
		}
		n.Kind, n.Severity = config.NotifyReadinessLost, control.SeverityWarning
		n.Title = fmt.Sprintf("%s in %s is not ready to take over", orAll(e.Service), e.Region)
		n.Key = key(n.Kind, e.Service, e.Region, e.Status)
	case control.EventExposure:
		if e.Status != "breached" {
			return Notification{}, false
		}
		n.Kind, n.Severity = config.NotifyExposureBreached, control.SeverityWarning
		n.Title = fmt.Sprintf("%s in %s: exposure above the RPO", orAll(e.Service), e.Region)
		n.Key = key(n.Kind, e.Service, e.Region, e.Status)
	case control.EventDrill:
		// The measurements ("measured", attached to the run) and a
		// scheduled drill that failed are results; a scheduled drill's
		// start, skip or success (its measurements follow) are not.
		if e.Status != "measured" && e.Status != "failed" {
			return Notification{}, false
		}
		n.Kind, n.Severity = config.NotifyDrillResult, e.Severity
		if n.Severity == "" {
			n.Severity = control.SeverityInfo
		}
		n.Title, n.Key = "Drill result", key(n.Kind, fmt.Sprint(e.Seq))
		if e.Run != "" {
			n.Title, n.Key = fmt.Sprintf("Drill %s: result", e.Run), key(n.Kind, e.Run)
		}
	default:
		return Notification{}, false
	}
	return n, true
}

// key joins the parts of a de-duplication key.
func key(parts ...string) string { return strings.Join(parts, "/") }

// orAll names a service, or all of them when the event names none.
func orAll(service string) string {
	if service == "" {
		return "All services"
	}
	return service
}

// severityRank orders severities; an unknown one counts as info.
func severityRank(s string) int {
	switch s {
	case control.SeverityWarning:
		return 1
	case control.SeverityCritical:
		return 2
	}
	return 0
}

// validSeverity reports whether s names a severity ("" is not one).
func validSeverity(s string) bool {
	return s == control.SeverityInfo || s == control.SeverityWarning || s == control.SeverityCritical
}

// Package deploy holds Lifeboat's monitoring files rather than Go code: the
// Prometheus alert rules, their unit tests and an example scrape
// configuration (prometheus/), and a Grafana dashboard (grafana/). Its test
// checks them with promtool and against the metrics Lifeboat exports; see
// README.md for how to load them.
package deploy

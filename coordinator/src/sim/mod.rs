//! `coordinator simulate`: federated rounds of many nodes on one machine over real loopback
//! sockets, with a round table, `report.json` and SVG plots.

pub mod plot;
pub mod report;

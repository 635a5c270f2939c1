"""The EC2 Instance Connect ranges: ip-ranges.json (fetch, verify, parse), the state remembered between runs, the
managed group's rules, and the refresh that keeps eic-guard's groups in line with AWS's file."""

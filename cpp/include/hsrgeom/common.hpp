// Everything the structures share, by concern (include the narrower header where that suffices):
//   types.hpp     PointsView, Halfspaces, QueryStats, Counters (and index_t, from predicate.hpp)
//   dispatch.hpp  with_dim / with_dim_in (compile-time d), dot_f64
//   query.hpp     the query concept: sinks, drivers (report_visit, ...), QueryMethods
//   report.hpp    IdList, ReportResult, sort_ids, join_chunks, report_queries
//   sums.hpp      SumSpec, SumAcc, SumResult, merge_sums
//   topk.hpp      TopKCollector, topk_score, write_topk
//   parallel.hpp  thread policy (resolve_threads, startable_threads), parallel_for, for_each_query
//   progress.hpp  BuildProgress, verbose_flag
//   interrupt.hpp cancellation of long calls (Ctrl-C)
//   predicate.hpp the exact membership predicate
#pragma once

#include "hsrgeom/dispatch.hpp"
#include "hsrgeom/interrupt.hpp"
#include "hsrgeom/parallel.hpp"
#include "hsrgeom/predicate.hpp"
#include "hsrgeom/progress.hpp"
#include "hsrgeom/query.hpp"
#include "hsrgeom/report.hpp"
#include "hsrgeom/sums.hpp"
#include "hsrgeom/topk.hpp"
#include "hsrgeom/types.hpp"

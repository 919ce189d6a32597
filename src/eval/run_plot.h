// The accuracy-vs-MACs plot of a table of runs (`smoe table --plot`, and the
// end of every `smoe sweep`): for each cell of the table, the base model, the
// MoE (bagging, top-1; with one or two cells also top-1 alone, stacking and
// top-2) and the anytime curve over eval.taus, each at the mean
// MACs of the cell's runs, with the mean accuracy and ± one sample standard
// deviation over its seeds as error bars. Torch-free.
#pragma once

#include <string>

#include "eval/run_table.h"

namespace smoe::eval {

void plot_table(const RunTable& t, const std::string& path, const std::string& title);

}  // namespace smoe::eval

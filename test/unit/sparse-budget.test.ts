// SparseBudget: which sparse eStargz copies to give up when they hold more than the budget.
import t from 'tap';
import { SparseBudget } from '../../src/lazy/sparse-budget.js';

t.test('past the budget, the least recently used copies other than the one just used are given up', async (t) => {
  const budget = new SparseBudget(100);
  budget.note('a', 40);
  budget.note('b', 40);
  t.same(budget.over('b'), [], 'within the budget: nothing');
  budget.note('c', 40);
  t.equal(budget.total, 120);
  t.same(budget.over('c'), ['a'], 'the oldest goes first, and only as many as needed');
  budget.note('a', 40); // a read again: now the most recent
  t.same(budget.over('a'), ['b'], 'a copy read again is no longer the oldest');
  budget.note('c', 90); // c grew
  t.same(budget.over('c'), ['b', 'a'], 'several, oldest first, when one is not enough');
  t.same(new SparseBudget(10).over('only'), [], 'nothing to give up');
  const one = new SparseBudget(10);
  one.note('big', 50);
  t.same(one.over('big'), [], 'the copy just used is kept even when it alone is over the budget');
  budget.drop('c');
  t.equal(budget.total, 80, 'drop takes its bytes off the total');
});

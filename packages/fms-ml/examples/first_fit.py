"""A first fit: logistic regression from fms_ml, checked against scikit-learn's.

Run from the repository root: `uv run python packages/fms-ml/examples/first_fit.py`
(scikit-learn, for the comparison, is in the workspace's test dependencies).
"""

from fms_ml.datasets import make_classification
from fms_ml.linear_model import LogisticRegression
from fms_ml.metrics import accuracy_score
from fms_ml.model_selection import train_test_split

X, y = make_classification(n_samples=1000, n_features=20, n_informative=5, random_state=0)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)

model = LogisticRegression(C=0.1).fit(X_train, y_train)  # hyper-parameters go to __init__
print(model)  # the repr shows what differs from the defaults
print("coef_", model.coef_.shape, "after", model.n_iter_, "iterations")  # learned state ends in _
print(f"held-out accuracy {accuracy_score(y_test, model.predict(X_test)):.3f}")

# scikit-learn's estimator of the same name on the same data; with both solvers run to a tight
# tolerance the coefficients agree to about 1e-8 (at the default tol=1e-4, to about 1e-4).
from sklearn.linear_model import LogisticRegression as SkLogisticRegression  # noqa: E402

ours = LogisticRegression(C=0.1, tol=1e-10).fit(X_train, y_train)
reference = SkLogisticRegression(C=0.1, tol=1e-10).fit(X_train, y_train)
print(
    f"largest difference from scikit-learn's coefficients {abs(ours.coef_ - reference.coef_).max():.0e}"
)
